"""meshpay's Python bindings, for real: two library instances pay each other over the bridged
BLE framer and Noise session, with this script as the radio (packets cut at MTU 23 and 185,
5 % lost), then one of them pays a real `meshpay run` process over libp2p on loopback.

Run by `ffi/tests/bindings.rs`, which generates the bindings next to the library and passes:
  MESHPAY_BINDINGS    directory holding meshpay.py and libmeshpay_ffi.so
  MESHPAY_BIN         the meshpay binary (for `meshpay dev issue-allowance`)
  MESHPAY_ISSUER_DIR  a development issuer's directory
  MESHPAY_NODE_ADDR   the running node's libp2p address with its peer id
  MESHPAY_NODE_REQUEST  a payment request the running node made
  MESHPAY_WORK        a scratch directory
Prints one JSON line per figure and ends with a line `{"ok": true, ...}`.
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.environ["MESHPAY_BINDINGS"])
import meshpay  # noqa: E402

WORK = os.environ["MESHPAY_WORK"]
ISSUER = os.environ["MESHPAY_ISSUER_DIR"]
PASS = "correct horse"


def open_wallet(name):
    home = os.path.join(WORK, name)
    key = meshpay.create_wallet(home, PASS)
    wallet = meshpay.Wallet.open(
        home,
        PASS,
        meshpay.WalletSettings(
            sentinel_dir=os.path.join(WORK, name + "-state"),
            listen=["/ip4/127.0.0.1/tcp/0"],
            mdns=False,
            ble=True,
            relay=False,
        ),
    )
    assert wallet.device_key() == key
    with open(os.path.join(ISSUER, "descriptor.cbor"), "rb") as f:
        wallet.trust_issuer(f.read())
    return wallet


def fund(wallet, limit):
    out = os.path.join(WORK, wallet.device_key() + ".cert")
    subprocess.run(
        [os.environ["MESHPAY_BIN"], "dev", "issue-allowance", "--issuer-dir", ISSUER,
         "--holder", wallet.device_key(), "--limit", str(limit), "--out", out],
        check=True, capture_output=True)
    with open(out, "rb") as f:
        return wallet.add_allowance(f.read())


class Air:
    """One BLE connection between two instances: each side's writes go to the other,
    checked against the MTU, with a seeded share lost."""

    def __init__(self, central, peripheral, mtu, loss_per_mille):
        self.stop = threading.Event()
        self.lost = 0
        self.carried = 0
        c = central.ble_connected("peripheral", meshpay.BleRole.CENTRAL, mtu)
        p = peripheral.ble_connected("central", meshpay.BleRole.PERIPHERAL, mtu)
        self.threads = [
            threading.Thread(target=self.pump, args=(central, peripheral, p, mtu, loss_per_mille, 1)),
            threading.Thread(target=self.pump, args=(peripheral, central, c, mtu, loss_per_mille, 2)),
        ]
        for t in self.threads:
            t.start()

    def pump(self, src, dst, conn, mtu, loss, seed):
        rng = seed * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        while not self.stop.is_set():
            action = src.ble_next_action(20)
            if action is None:
                continue
            if action.is_disconnect():
                dst.ble_disconnected(conn)
                return
            packet = action.bytes
            assert len(packet) + 3 <= mtu, f"a packet of {len(packet)} bytes at MTU {mtu}"
            rng ^= (rng << 13) & 0xFFFFFFFFFFFFFFFF
            rng ^= rng >> 7
            rng ^= (rng << 17) & 0xFFFFFFFFFFFFFFFF
            if rng % 1000 < loss:
                self.lost += 1
                continue
            self.carried += 1
            try:
                dst.ble_received(conn, packet)
            except meshpay.MeshpayError.Radio:
                return
        try:
            dst.ble_disconnected(conn)
        except meshpay.MeshpayError.Radio:
            pass

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def wait_for(what, check, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"no {what} after {seconds} s")


def main():
    shopper = open_wallet("shopper")
    vendor = open_wallet("vendor")
    added = fund(shopper, 10_000)
    assert added.new and added.limit == 10_000, added

    service = vendor.ble_service()
    assert service.service_uuid == "a8c30000-6d65-7368-7061-790000000001"
    assert len(service.service_data) == 9

    paid = 0
    for mtu, amount in [(23, 150), (185, 275)]:
        air = Air(shopper, vendor, mtu, 50)
        wait_for("BLE session", lambda: any(
            p.device_key == vendor.device_key() and p.link == "ble" for p in shopper.peers()))
        request = vendor.request_payment(amount, None, f"MTU {mtu}")
        shown = shopper.read_request(request.text)
        assert (shown.amount, shown.payee) == (amount, vendor.device_key())
        start = time.monotonic()
        payment = shopper.pay(request.text, None)
        took = time.monotonic() - start
        assert payment.status == meshpay.PaymentStatus.ACKED, payment
        paid += amount
        heard = None
        while heard is None:
            event = vendor.next_event(5000)
            assert event is not None, "the vendor heard of no payment"
            if event.is_payment_received():
                heard = event
        assert heard.amount == amount and heard.nonce == request.nonce, heard
        air.close()
        print(json.dumps({"mtu": mtu, "pay_ms": round(took * 1000, 1),
                          "packets": air.carried, "lost": air.lost}), flush=True)

    received = sum(b.received for b in vendor.balances())
    assert received == paid, (received, paid)
    [kes] = shopper.balances()
    assert (kes.sent_acked, kes.spendable) == (paid, 10_000 - paid), kes
    assert [h.received for h in vendor.history()] == [True, True]

    # Bad input: a typed error that says what is wrong, and nothing changes.
    try:
        shopper.pay("mpreq1notarequest", None)
        raise AssertionError("a bad request was paid")
    except meshpay.MeshpayError.Input as e:
        assert "request" in str(e), e
    try:
        vendor.ble_received(999, b"\x01\x02")
        raise AssertionError("an unknown connection took bytes")
    except meshpay.MeshpayError.Radio:
        pass
    assert shopper.balances()[0].sent_acked == paid

    # A real node, over libp2p on loopback.
    node = shopper.dial(os.environ["MESHPAY_NODE_ADDR"])
    text = os.environ["MESHPAY_NODE_REQUEST"]
    to_node = shopper.pay(text, "order-1")
    assert to_node.status == meshpay.PaymentStatus.ACKED, to_node
    assert to_node.payee == node
    again = shopper.pay(text, "order-1")
    assert again.iou == to_node.iou, "a retry paid twice"

    shopper.shutdown()
    vendor.shutdown()
    try:
        vendor.balances()
        raise AssertionError("a closed wallet answered")
    except meshpay.MeshpayError.Closed:
        pass
    print(json.dumps({"ok": True, "paid_ble": paid, "paid_node": to_node.amount,
                      "node": node}), flush=True)


if __name__ == "__main__":
    main()
