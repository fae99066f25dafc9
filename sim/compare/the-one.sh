#!/bin/sh
# meshpay-sim against The ONE on the same contacts and messages, bandwidth-limited and not.
#
#   sim/compare/the-one.sh THE_ONE_DIR [WORK_DIR]
#   RUNS="1000 EpidemicRouter epidemic;100 EpidemicRouter epidemic" sim/compare/the-one.sh ...
#
# RUNS picks the runs, separated by ";": bytes per second, The ONE's router, meshpay-sim's
# routing, and "source" for source spray-and-wait (default: all eight below).
#
# THE_ONE_DIR is a checkout of The ONE (github.com/akeranen/the-one), compiled with its
# compile.sh (Java 17 is enough). The script makes one random-waypoint trace of 100 nodes
# over 12 hours and 1,445 messages of 500 B with meshpay-sim, replays both in The ONE
# (connections from the trace only, Epidemic, binary and source Spray-and-Wait with 6 copies,
# PRoPHET with 30 s time units, MaxProp) and
# in meshpay-sim with the ONE-like options, and prints delivered and mean latency side by
# side. The ONE is only run, never linked or copied.
set -eu
one=$(cd "$1" && pwd)
work=${2:-$(mktemp -d)}
mkdir -p "$work/reports"
cd "$(dirname "$0")/../.."
cargo build --release -q -p meshpay-sim
sim=${CARGO_TARGET_DIR:-target}/release/meshpay-sim

cat > "$work/gen.toml" <<TOML
name = "rwp-100"
seed = 1
duration_s = 43200.0
nodes = 100
[mobility]
model = "random-waypoint"
width_m = 1000.0
height_m = 1000.0
speed_min = 0.5
speed_max = 1.5
pause_max_s = 120.0
step_s = 1.0
[radio]
range_m = 10.0
bitrate_bps = 0
setup_s = 0.0
[workload]
interval_min_s = 25.0
interval_max_s = 35.0
size = 500
ttl_s = 18000.0
TOML
"$sim" run "$work/gen.toml" --quiet --contacts-out "$work/contacts.txt" \
  --messages-out "$work/messages.txt" > /dev/null

cat > "$work/one.txt" <<ONE
Scenario.name = cmp_%%Group.router%%_%%btInterface.transmitSpeed%%
Scenario.simulateConnections = false
Scenario.updateInterval = 0.1
Scenario.endTime = 43200
Scenario.nrofHostGroups = 1
btInterface.type = SimpleBroadcastInterface
btInterface.transmitRange = 10
Group.groupID = p
Group.nrofHosts = 100
Group.movementModel = StationaryMovement
Group.nodeLocation = 10, 10
Group.nrofInterfaces = 1
Group.interface1 = btInterface
Group.bufferSize = 5M
Group.msgTtl = 300
Group.speed = 0.5, 1.5
Group.waitTime = 0, 120
MovementModel.worldSize = 1000, 1000
MovementModel.rngSeed = 1
Events.nrof = 2
Events1.class = ExternalEventsQueue
Events1.filePath = $work/contacts.txt
Events2.class = ExternalEventsQueue
Events2.filePath = $work/messages.txt
SprayAndWaitRouter.nrofCopies = 6
SprayAndWaitRouter.binaryMode = true
ProphetRouter.secondsInTimeUnit = 30
Report.nrofReports = 1
Report.reportDir = $work/reports/
Report.report1 = MessageStatsReport
ONE

printf '%-10s %-24s %22s %22s\n' "B/s" routing "The ONE" meshpay-sim
runs=${RUNS:-"31250 EpidemicRouter epidemic;1000 EpidemicRouter epidemic;\
100 EpidemicRouter epidemic;1000 SprayAndWaitRouter spray-and-wait;\
100 SprayAndWaitRouter spray-and-wait;31250 ProphetRouter prophet;\
31250 SprayAndWaitRouter spray-and-wait source;\
31250 MaxPropRouter maxprop"}
old_ifs=$IFS
IFS=';'
set -f
for run in $runs; do
  IFS=$old_ifs
  set -- $run
  mode=${4:-binary}
  # MaxPropRouter drops by its own order on a full buffer; the other routers the oldest.
  drop=oldest
  if [ "$3" = maxprop ]; then
    drop=maxprop
  fi
  name="cmp_$2_${mode}_$1"
  printf 'Group.router = %s\nbtInterface.transmitSpeed = %s\nScenario.name = %s\n' "$2" "$1" "$name" \
    > "$work/one-$name.txt"
  if [ "$mode" = source ]; then
    echo 'SprayAndWaitRouter.binaryMode = false' >> "$work/one-$name.txt"
  fi
  # The ONE reads default_settings.txt from its working directory: run it from $work.
  (cd "$work" && java -Xmx512M -cp "$one/target:$one/lib/ECLA.jar:$one/lib/DTNConsoleConnection.jar" \
    core.DTNSim -b 1 one.txt "one-$name.txt" > "one-$name.log")
  report="$work/reports/${name}_MessageStatsReport.txt"
  theirs=$(awk '/^delivered:/ {d=$2} /^latency_avg:/ {l=$2} END {printf "%d, %.0f s", d, l}' "$report")
  cat > "$work/sim-$3-$mode-$1.toml" <<TOML
name = "cmp"
duration_s = 43200.0
nodes = 100
[mobility]
model = "trace"
path = "$work/contacts.txt"
[radio]
bitrate_bps = $(($1 * 8))
setup_s = 0.0
duplex = "half"
control_on_air = false
[workload]
trace = "$work/messages.txt"
ttl_s = 18000.0
[routing]
routing = "$3"
spray_mode = "$mode"
copies = 6
buffer_kb = 5120
bundles_per_message = 1
order = "random"
destination_first = true
keep_link = true
relay_delivered = false
halve_to_destination = true
drop = "$drop"
TOML
  ours=$("$sim" run "$work/sim-$3-$mode-$1.toml" --quiet --format csv | awk -F, 'NR == 2 {printf "%d, %.0f s", $8, $11}')
  printf '%-10s %-24s %22s %22s\n' "$1" "$3${4:+ ($4)}" "$theirs" "$ours"
done
