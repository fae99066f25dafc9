//! The risk rules with a virtual clock: windows, caps, dedupe, thresholds.

use super::*;

const T0: u64 = 1_800_000_000;

fn id(n: u8) -> AllowanceId {
    AllowanceId([n; 16])
}

fn key(n: u8) -> DeviceKey {
    DeviceKey([n; 32])
}

fn pay(allowance: u8, counter: u32, payee: u8, amount: u64) -> Payment {
    Payment {
        allowance: id(allowance),
        counter,
        holder: key(200),
        payee: key(payee),
        amount,
        settled: true,
    }
}

fn rules(payments: u64, value: u64) -> RiskRules {
    RiskRules {
        velocity_payments: payments,
        velocity_value: value,
        ..RiskRules::default()
    }
}

fn of(alerts: &[Alert], rule: Rule) -> Vec<&Alert> {
    alerts.iter().filter(|a| a.rule == rule).collect()
}

#[test]
fn velocity_alerts_once_on_crossing_and_stands_while_over() {
    let mut m = Monitor::new(rules(3, 0));
    assert!(m.payment(&pay(1, 1, 10, 100), T0).is_empty());
    assert!(m.payment(&pay(1, 2, 10, 100), T0 + 10).is_empty());
    let raised = m.payment(&pay(1, 3, 11, 100), T0 + 20);
    assert_eq!(raised.len(), 1);
    let a = &raised[0];
    assert_eq!(
        (a.rule, a.value, a.threshold, a.since),
        (Rule::Velocity, 3, 3, T0 + 20)
    );
    assert_eq!(a.subject, id(1).to_hex());
    assert!(a.detail.contains(&key(200).to_text()), "{}", a.detail);
    // Over the threshold already: no new alert, but it stands with the new count.
    assert!(m.payment(&pay(1, 4, 11, 100), T0 + 30).is_empty());
    let standing = m.alerts(T0 + 40);
    assert_eq!(of(&standing, Rule::Velocity).len(), 1);
    assert_eq!(standing[0].value, 4);
    assert_eq!(standing[0].since, T0 + 20);
    // Another allowance under the threshold raises nothing.
    assert!(m.payment(&pay(2, 1, 10, 100), T0 + 40).is_empty());
    assert_eq!(of(&m.alerts(T0 + 50), Rule::Velocity).len(), 1);
}

#[test]
fn velocity_by_value_is_its_own_threshold() {
    let mut m = Monitor::new(rules(0, 1_000));
    assert!(m.payment(&pay(1, 1, 10, 600), T0).is_empty());
    let raised = m.payment(&pay(1, 2, 10, 400), T0 + 1);
    assert_eq!(raised.len(), 1);
    assert_eq!((raised[0].value, raised[0].threshold), (1_000, 1_000));
    assert!(raised[0].detail.contains("1000 minor units"));
}

#[test]
fn huge_amounts_leave_the_window_without_underflow() {
    let mut m = Monitor::new(rules(0, u64::MAX));
    // Two minutes whose sum passes u64::MAX: the totals must not wrap or go below zero
    // when the minutes slide out.
    m.payment(&pay(1, 1, 10, u64::MAX - 1), T0);
    let raised = m.payment(&pay(1, 2, 10, u64::MAX - 1), T0 + 60);
    assert_eq!(of(&raised, Rule::Velocity).len(), 1);
    assert_eq!(raised[0].value, u64::MAX);
    let start = T0 / 60 * 60;
    // The first minute leaves: what stays is the second minute alone.
    let standing = m.alerts(start + WINDOW_SECS);
    assert!(standing.is_empty(), "{standing:?}");
    assert_eq!(
        m.velocity.get(&id(1)).map(|v| v.window.value()),
        Some(u64::MAX - 1)
    );
    assert!(m.alerts(T0 + 3 * WINDOW_SECS).is_empty());
    assert_eq!(m.sizes()[0], 0);
}

#[test]
fn refused_payments_count_as_payments_but_not_as_value() {
    let mut m = Monitor::new(rules(2, 1_000));
    let refused = Payment {
        settled: false,
        ..pay(1, 1, 10, (1 << 53) - 1)
    };
    assert!(m.payment(&refused, T0).is_empty());
    let raised = m.payment(&pay(1, 2, 10, 5), T0 + 1);
    // Two payments: the payment threshold is reached; 5 minor units: the value one is not.
    assert_eq!(raised.len(), 1);
    assert_eq!((raised[0].value, raised[0].threshold), (2, 2));
    assert_eq!(m.velocity.get(&id(1)).map(|v| v.window.value()), Some(5));
}

#[test]
fn the_most_recent_payees_are_kept_for_a_fork() {
    let mut m = Monitor::new(rules(0, 0));
    // A clone pays throwaway payees first, then the real victims.
    let throwaway = u8::try_from(MAX_PAYEES_PER_ALLOWANCE).expect("small");
    for p in 0..throwaway {
        m.payment(&pay(1, u32::from(p) + 1, p, 1), T0);
    }
    m.payment(&pay(1, 100, 150, 1), T0 + 1);
    m.payment(&pay(1, 101, 151, 1), T0 + 2);
    // A payee paid again is the newest again, not dropped as the oldest.
    m.payment(&pay(1, 102, 0, 1), T0 + 3);
    let flagged: BTreeSet<String> = m
        .fork(id(1), T0 + 10)
        .iter()
        .map(|a| a.subject.clone())
        .collect();
    assert_eq!(flagged.len(), MAX_PAYEES_PER_ALLOWANCE);
    for victim in [150, 151, 0] {
        assert!(flagged.contains(&key(victim).to_text()), "payee {victim}");
    }
    // The oldest throwaways (1 and 2) made room.
    assert!(!flagged.contains(&key(1).to_text()));
    assert!(!flagged.contains(&key(2).to_text()));
}

#[test]
fn the_window_slides_and_the_alert_rearms() {
    let mut m = Monitor::new(rules(2, 0));
    m.payment(&pay(1, 1, 10, 1), T0);
    assert_eq!(m.payment(&pay(1, 2, 10, 1), T0 + 60).len(), 1);
    // The first minute leaves the window an hour after it started; the second stays.
    let start = T0 / 60 * 60;
    assert_eq!(m.alerts(start + WINDOW_SECS - 1).len(), 1);
    assert!(m.alerts(start + WINDOW_SECS).is_empty());
    // One more payment crosses again: a new alert, since then.
    let raised = m.payment(&pay(1, 3, 10, 1), start + WINDOW_SECS + 5);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].since, start + WINDOW_SECS + 5);
    // Everything slides out; the allowance is forgotten.
    assert!(m.alerts(T0 + 3 * WINDOW_SECS).is_empty());
    assert_eq!(m.sizes()[0], 0);
}

#[test]
fn a_payment_counts_once_per_allowance_and_counter() {
    let mut m = Monitor::new(rules(2, 0));
    m.payment(&pay(1, 1, 10, 1), T0);
    // The same slot again (a record uploaded again, or the other side of a double spend).
    assert!(m.payment(&pay(1, 1, 10, 1), T0 + 1).is_empty());
    assert!(m.payment(&pay(1, 1, 11, 5), T0 + 2).is_empty());
    assert!(m.alerts(T0 + 3).is_empty());
    // The same counter under another allowance is another payment.
    m.payment(&pay(2, 1, 10, 1), T0 + 4);
    assert_eq!(m.payment(&pay(1, 2, 10, 1), T0 + 5).len(), 1);
}

#[test]
fn every_map_stays_within_its_cap() {
    let mut m = Monitor::new(rules(1_000, 0));
    let n = u32::try_from(MAX_SEEN + 10).expect("small");
    for c in 1..=n {
        // Many allowances (ids from the counter), each with one payment, one payee.
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&c.to_be_bytes());
        let mut payee = [0u8; 32];
        payee[..4].copy_from_slice(&c.to_be_bytes());
        m.payment(
            &Payment {
                allowance: AllowanceId(a),
                counter: 1,
                holder: key(1),
                payee: DeviceKey(payee),
                amount: 1,
                settled: true,
            },
            T0,
        );
        m.junk(IpAddr::from(c.to_be_bytes()), 1, T0);
    }
    let [velocity, seen, payees, _, _, sources, _] = m.sizes();
    assert_eq!(velocity, MAX_WATCHED);
    assert_eq!(seen, MAX_SEEN);
    assert_eq!(payees, MAX_PAYEE_SETS);
    assert_eq!(sources, MAX_SOURCES);
    // The newest are kept, the oldest dropped.
    let mut newest = [0u8; 16];
    newest[..4].copy_from_slice(&n.to_be_bytes());
    assert!(m.velocity.contains(&AllowanceId(newest)));
    let mut first = [0u8; 16];
    first[..4].copy_from_slice(&1u32.to_be_bytes());
    assert!(!m.velocity.contains(&AllowanceId(first)));
    // Payees per allowance are capped too.
    for p in 0..=u8::try_from(MAX_PAYEES_PER_ALLOWANCE + 5).expect("small") {
        m.payment(&pay(7, u32::from(p) + 1, p, 1), T0);
    }
    assert_eq!(
        m.payees.get(&id(7)).map(VecDeque::len),
        Some(MAX_PAYEES_PER_ALLOWANCE)
    );
}

#[test]
fn the_seen_slots_expire_with_the_window() {
    let mut m = Monitor::new(rules(0, 0));
    m.payment(&pay(1, 1, 10, 1), T0);
    m.payment(&pay(1, 2, 10, 1), T0 + 10);
    assert_eq!(m.sizes()[1], 2);
    // An hour after the first: it is forgotten, the second (10 s later) not yet.
    m.payment(&pay(1, 3, 10, 1), T0 + WINDOW_SECS);
    assert_eq!(m.sizes()[1], 2);
    m.payment(&pay(1, 4, 10, 1), T0 + WINDOW_SECS + 10);
    assert_eq!(m.sizes()[1], 2);
}

#[test]
fn near_limit_alerts_when_the_settled_total_crosses() {
    let mut m = Monitor::new(RiskRules::default());
    let (a, h) = (id(1), key(2));
    assert_eq!(m.escrow_moved(a, &h, "KES", 1_000, 0, 899, T0), None);
    let alert = m
        .escrow_moved(a, &h, "KES", 1_000, 899, 900, T0 + 5)
        .expect("crossed 90 %");
    assert_eq!(
        (alert.rule, alert.value, alert.threshold, alert.since),
        (Rule::NearLimit, 90, 90, T0 + 5)
    );
    assert!(
        alert.detail.contains("900 of its 1000 KES"),
        "{}",
        alert.detail
    );
    assert_eq!(m.near_limit_since(&a), Some(T0 + 5));
    // Already over: no new alert.
    assert_eq!(
        m.escrow_moved(a, &h, "KES", 1_000, 900, 1_000, T0 + 6),
        None
    );
    // Off at 0.
    let mut off = Monitor::new(RiskRules {
        near_limit_percent: 0,
        ..RiskRules::default()
    });
    assert_eq!(off.escrow_moved(a, &h, "KES", 1_000, 0, 1_000, T0), None);
    // No overflow at the largest amounts.
    let big = meshpay_protocol::objects::MAX_AMOUNT;
    assert!(RiskRules::default().near_limit(big, big));
    assert!(!RiskRules::default().near_limit(big, big / 2));
}

#[test]
fn payees_of_a_forked_allowance_are_flagged() {
    let mut m = Monitor::new(rules(0, 0));
    m.payment(&pay(1, 1, 10, 5), T0);
    // The other side of a double spend (same counter, another payee) is remembered too.
    m.payment(&pay(1, 1, 11, 5), T0 + 1);
    m.payment(&pay(2, 1, 12, 5), T0 + 2);
    let flagged = m.fork(id(1), T0 + 10);
    let subjects: BTreeSet<String> = flagged.iter().map(|a| a.subject.clone()).collect();
    assert_eq!(subjects, [key(10).to_text(), key(11).to_text()].into());
    assert!(flagged.iter().all(|a| a.rule == Rule::ForkedPayee
        && a.detail.contains(&id(1).to_hex())
        && a.since == T0 + 10));
    // Proven again: nothing new.
    assert!(m.fork(id(1), T0 + 11).is_empty());
    // A payment under the forked allowance after the proof flags its payee at once.
    let late = m.payment(&pay(1, 3, 13, 5), T0 + 20);
    assert_eq!(of(&late, Rule::ForkedPayee).len(), 1);
    assert_eq!(late[0].subject, key(13).to_text());
    // A second forked allowance paying a flagged payee raises its count.
    m.payment(&pay(2, 2, 10, 5), T0 + 21);
    let again = m.fork(id(2), T0 + 30);
    let p10 = again
        .iter()
        .find(|a| a.subject == key(10).to_text())
        .expect("payee 10 again");
    assert_eq!((p10.value, p10.since), (2, T0 + 10));
    assert_eq!(of(&m.alerts(T0 + 31), Rule::ForkedPayee).len(), 4);
    // A day after their last forked IOU, payees are no longer flagged.
    assert!(m.alerts(T0 + 30 + FORKED_PAYEE_SECS).is_empty());
}

#[test]
fn a_source_of_junk_is_flagged_at_the_threshold() {
    let mut m = Monitor::new(RiskRules::default());
    let (bad, good) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
    assert_eq!(m.junk(bad, 9, T0), None);
    assert_eq!(m.junk(good, 3, T0), None);
    assert_eq!(m.junk(bad, 0, T0 + 1), None);
    let alert = m.junk(bad, 1, T0 + 2).expect("ten in an hour");
    assert_eq!(
        (alert.rule, alert.value, alert.threshold, alert.since),
        (Rule::JunkSource, 10, 10, T0 + 2)
    );
    assert_eq!(alert.subject, "10.0.0.1");
    assert_eq!(m.junk(bad, 5, T0 + 3), None);
    let standing = m.alerts(T0 + 4);
    assert_eq!(standing.len(), 1);
    assert_eq!(standing[0].value, 15);
    assert!(m.alerts(T0 + 2 * WINDOW_SECS).is_empty());
    assert_eq!(m.sizes()[5], 0);
}

#[test]
fn rules_serialise_with_their_names() {
    let json = serde_json::to_value(RiskRules::default()).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({"velocity_payments": 60, "velocity_value": 0,
            "near_limit_percent": 90, "junk_per_hour": 10})
    );
    for rule in Rule::ALL {
        assert_eq!(
            serde_json::to_value(rule).expect("serialises"),
            serde_json::json!(rule.name())
        );
    }
}
