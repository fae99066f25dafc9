// meshpay's Kotlin bindings on the JVM, for real: two library instances pay each other over the
// bridged BLE framer and Noise session, with this program as the radio (packets cut at MTU 23
// and 185, 5 % lost), then one of them pays a real `meshpay run` process over libp2p on
// loopback. Run by ffi/tests/bindings.rs with the same environment as the Python test
// (ffi/python/test_meshpay.py); prints one JSON line per figure and ends with {"ok": true, ...}.
package org.meshpay.example

import org.meshpay.BleAction
import org.meshpay.BleRole
import org.meshpay.Event
import org.meshpay.MeshpayException
import org.meshpay.PaymentStatus
import org.meshpay.Wallet
import org.meshpay.WalletSettings
import org.meshpay.createWallet
import java.io.File
import java.util.concurrent.atomic.AtomicBoolean
import java.util.concurrent.atomic.AtomicLong
import kotlin.concurrent.thread

private val env: Map<String, String> = System.getenv()
private val work = File(env.getValue("MESHPAY_WORK"))
private val issuer = File(env.getValue("MESHPAY_ISSUER_DIR"))
private const val PASS = "correct horse"

private fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw AssertionError(what())
}

private fun openWallet(name: String): Wallet {
    val home = File(work, name).path
    val key = createWallet(home, PASS)
    val wallet = Wallet.open(
        home, PASS,
        WalletSettings(
            sentinelDir = File(work, "$name-state").path,
            listen = listOf("/ip4/127.0.0.1/tcp/0"),
            mdns = false,
            ble = true,
            relay = false,
        ),
    )
    check(wallet.deviceKey() == key) { "device key" }
    wallet.trustIssuer(File(issuer, "descriptor.cbor").readBytes())
    return wallet
}

private fun fund(wallet: Wallet, limit: Long) {
    val out = File(work, wallet.deviceKey() + ".cert")
    val p = ProcessBuilder(
        env.getValue("MESHPAY_BIN"), "dev", "issue-allowance", "--issuer-dir", issuer.path,
        "--holder", wallet.deviceKey(), "--limit", limit.toString(), "--out", out.path,
    ).redirectErrorStream(true).start()
    p.inputStream.readAllBytes()
    check(p.waitFor() == 0) { "issue-allowance failed" }
    val added = wallet.addAllowance(out.readBytes())
    check(added.new && added.limit == limit.toULong()) { "$added" }
}

/** One BLE connection between two instances, each side's packets carried to the other. */
private class Air(central: Wallet, peripheral: Wallet, val mtu: Int, val lossPerMille: Long) {
    private val stop = AtomicBoolean(false)
    val lost = AtomicLong()
    val carried = AtomicLong()
    private val threads: List<Thread>

    init {
        val c = central.bleConnected("peripheral", BleRole.CENTRAL, mtu.toUInt())
        val p = peripheral.bleConnected("central", BleRole.PERIPHERAL, mtu.toUInt())
        threads = listOf(
            thread { pump(central, peripheral, p, 1) },
            thread { pump(peripheral, central, c, 2) },
        )
    }

    private fun pump(src: Wallet, dst: Wallet, conn: ULong, seed: Long) {
        var rng = seed * -7046029254386353131L
        try {
            while (!stop.get()) {
                when (val action = src.bleNextAction(20u)) {
                    null -> {}
                    is BleAction.Disconnect -> {
                        dst.bleDisconnected(conn)
                        return
                    }
                    is BleAction.Write -> {
                        check(action.bytes.size + 3 <= mtu) { "a packet of ${action.bytes.size} bytes at MTU $mtu" }
                        rng = rng xor (rng shl 13)
                        rng = rng xor (rng ushr 7)
                        rng = rng xor (rng shl 17)
                        if (java.lang.Long.remainderUnsigned(rng, 1000) < lossPerMille) {
                            lost.incrementAndGet()
                        } else {
                            carried.incrementAndGet()
                            dst.bleReceived(conn, action.bytes)
                        }
                    }
                }
            }
            dst.bleDisconnected(conn)
        } catch (e: MeshpayException.Radio) {
            // The other side already dropped the connection.
        }
    }

    fun close() {
        stop.set(true)
        threads.forEach { it.join() }
    }
}

private fun waitFor(what: String, ok: () -> Boolean) {
    val deadline = System.nanoTime() + 30_000_000_000L
    while (System.nanoTime() < deadline) {
        if (ok()) return
        Thread.sleep(10)
    }
    throw AssertionError("no $what after 30 s")
}

fun main() {
    val shopper = openWallet("shopper")
    val vendor = openWallet("vendor")
    fund(shopper, 10_000)
    check(vendor.bleService().serviceData.size == 9) { "service data" }

    var paid = 0UL
    for ((mtu, amount) in listOf(23 to 150UL, 185 to 275UL)) {
        val air = Air(shopper, vendor, mtu, 50)
        waitFor("BLE session") {
            shopper.peers().any { it.deviceKey == vendor.deviceKey() && it.link == "ble" }
        }
        val request = vendor.requestPayment(amount, null, "MTU $mtu")
        val shown = shopper.readRequest(request.text)
        check(shown.amount == amount && shown.payee == vendor.deviceKey()) { "$shown" }
        val start = System.nanoTime()
        val payment = shopper.pay(request.text, null)
        val tookMs = (System.nanoTime() - start) / 1e6
        check(payment.status == PaymentStatus.ACKED) { "$payment" }
        paid += amount
        var heard: Event.PaymentReceived? = null
        while (heard == null) {
            val event = vendor.nextEvent(5000u) ?: throw AssertionError("the vendor heard of no payment")
            if (event is Event.PaymentReceived) heard = event
        }
        check(heard.amount == amount && heard.nonce == request.nonce) { "$heard" }
        air.close()
        println("""{"mtu": $mtu, "pay_ms": ${"%.1f".format(tookMs)}, "packets": ${air.carried.get()}, "lost": ${air.lost.get()}}""")
    }

    val received = vendor.balances().sumOf { it.received }
    check(received == paid) { "received $received, paid $paid" }
    val kes = shopper.balances().single()
    check(kes.sentAcked == paid && kes.spendable == 10_000UL - paid) { "$kes" }
    check(vendor.history().map { it.received } == listOf(true, true)) { "history" }

    // Bad input: a typed error that says what is wrong, and nothing changes.
    try {
        shopper.pay("mpreq1notarequest", null)
        throw AssertionError("a bad request was paid")
    } catch (e: MeshpayException.Input) {
        check(e.message!!.contains("request")) { "${e.message}" }
    }
    try {
        vendor.bleReceived(999UL, byteArrayOf(1, 2))
        throw AssertionError("an unknown connection took bytes")
    } catch (e: MeshpayException.Radio) {
    }
    check(shopper.balances().single().sentAcked == paid) { "changed by bad input" }

    // A real node, over libp2p on loopback.
    val node = shopper.dial(env.getValue("MESHPAY_NODE_ADDR"))
    val text = env.getValue("MESHPAY_NODE_REQUEST")
    val toNode = shopper.pay(text, "order-1")
    check(toNode.status == PaymentStatus.ACKED && toNode.payee == node) { "$toNode" }
    check(shopper.pay(text, "order-1").iou == toNode.iou) { "a retry paid twice" }

    shopper.shutdown()
    vendor.shutdown()
    try {
        vendor.balances()
        throw AssertionError("a closed wallet answered")
    } catch (e: MeshpayException.Closed) {
    }
    shopper.close()
    vendor.close()
    println("""{"ok": true, "paid_ble": $paid, "paid_node": ${toNode.amount}, "node": "$node"}""")
}
