// A vendor's till on meshpay, the smallest whole app: open (or create) a wallet, show a payment
// request as text for a QR code, and wait for the payment to arrive. The radio part an Android
// app adds is in the README ("meshpay in a phone app").
//
//   java -Djna.library.path=target/bindings/kotlin -cp ... org.meshpay.example.VendorKt DIR [AMOUNT]
package org.meshpay.example

import org.meshpay.Event
import org.meshpay.MeshpayException
import org.meshpay.Wallet
import org.meshpay.WalletSettings
import org.meshpay.createWallet
import java.io.File

fun main(args: Array<String>) {
    val dir = File(args.getOrElse(0) { "vendor-wallet" })
    val amount = args.getOrNull(1)?.toULong() ?: 250UL
    val passphrase = System.getenv("MESHPAY_PASSPHRASE") ?: "correct horse"
    if (!File(dir, "wallet.db").exists()) {
        println("new wallet, device key ${createWallet(dir.path, passphrase)}")
    }
    val wallet = try {
        Wallet.open(
            dir.path, passphrase,
            WalletSettings(
                // Outside the app's backups: on Android, Context.noBackupFilesDir.
                sentinelDir = File(dir, "../${dir.name}-no-backup").path,
                listen = listOf("/ip4/0.0.0.0/tcp/0"),
                mdns = false,
                ble = true,
                relay = false,
            ),
        )
    } catch (e: MeshpayException.WrongPassphrase) {
        println("cannot open: ${e.message}")
        return
    }
    wallet.use {
        val service = it.bleService()
        println("advertise ${service.serviceUuid} with service data ${service.serviceData.joinToString("") { b -> "%02x".format(b) }}")
        val request = it.requestPayment(amount, null, "till")
        println("show this as a QR code: ${request.text}")
        val deadline = System.currentTimeMillis() + (System.getenv("MESHPAY_WAIT_MS")?.toLong() ?: 60_000L)
        while (System.currentTimeMillis() < deadline) {
            when (val e = it.nextEvent(1000u)) {
                is Event.PaymentReceived -> if (e.nonce == request.nonce) {
                    println("PAID ${e.amount} by ${e.payer} (counter ${e.counter})")
                    break
                }
                is Event.Alert -> println("alert: ${e.alert.detail}")
                else -> {}
            }
        }
        it.balances().forEach { b -> println("${b.currency}: received ${b.received}, can spend ${b.spendable}") }
        it.shutdown()
    }
}
