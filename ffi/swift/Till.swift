// A vendor's till on iOS: the wallet from meshpay's Swift bindings (`ffi/bindings.sh` writes
// MeshpayFFI.swift, MeshpayFFIFFI.h and the module map; link libmeshpay_ffi.a, built with
// `cargo rustc -p meshpay-ffi --release --crate-type staticlib --target aarch64-apple-ios`),
// with CoreBluetooth as its radio in the peripheral role: advertise the meshpay service, take
// the central's writes on RX, notify packets on TX.

import CoreBluetooth
import Foundation

final class Till: NSObject, CBPeripheralManagerDelegate {
    let wallet: Wallet
    private var manager: CBPeripheralManager!
    private var tx: CBMutableCharacteristic!
    private var conns: [UUID: UInt64] = [:]          // central → connection id
    private var centrals: [UInt64: CBCentral] = [:]
    private let radio = DispatchQueue(label: "meshpay.radio")
    private var pending: (UInt64, Data)?             // a packet waiting for peripheralIsReady

    init(directory: URL, passphrase: String) throws {
        let home = directory.appendingPathComponent("wallet").path
        if !FileManager.default.fileExists(atPath: home + "/wallet.db") {
            _ = try createWallet(dir: home, passphrase: passphrase)
        }
        // The sentinel stays out of iCloud and iTunes backups (isExcludedFromBackup on this
        // directory), so a restored wallet retires its allowances instead of reusing counters.
        let sentinel = directory.appendingPathComponent("no-backup").path
        wallet = try Wallet.open(
            dir: home, passphrase: passphrase,
            settings: WalletSettings(
                sentinelDir: sentinel, listen: ["/ip4/0.0.0.0/tcp/0"], mdns: true, ble: true,
                relay: false))
        super.init()
        manager = CBPeripheralManager(delegate: self, queue: radio)
    }

    /// Shows `amount` as a QR code and calls `paid` when the payment arrives.
    func take(amount: UInt64, paid: @escaping (UInt64, String) -> Void) throws -> String {
        let request = try wallet.requestPayment(amount: amount, currency: nil, memo: nil)
        DispatchQueue.global().async { [wallet] in
            while true {
                guard let event = try? wallet.nextEvent(timeoutMs: 1000) else { continue }
                if case let .paymentReceived(_, payer, amount, _, nonce, _) = event,
                    nonce == request.nonce
                {
                    paid(amount, payer)
                    return
                }
            }
        }
        return request.text
    }

    // MARK: the radio

    func peripheralManagerDidUpdateState(_ peripheral: CBPeripheralManager) {
        guard peripheral.state == .poweredOn, let service = try? wallet.bleService() else { return }
        let rx = CBMutableCharacteristic(
            type: CBUUID(string: service.rxUuid), properties: [.writeWithoutResponse, .write],
            value: nil, permissions: [.writeable])
        tx = CBMutableCharacteristic(
            type: CBUUID(string: service.txUuid), properties: [.notify], value: nil,
            permissions: [.readable])
        let gatt = CBMutableService(type: CBUUID(string: service.serviceUuid), primary: true)
        gatt.characteristics = [rx, tx]
        peripheral.add(gatt)
        // iOS advertises no service data from an app: centrals connect to an advertiser
        // without it (docs/ble.md, "Who connects").
        peripheral.startAdvertising([
            CBAdvertisementDataServiceUUIDsKey: [CBUUID(string: service.serviceUuid)],
            CBAdvertisementDataLocalNameKey: service.localName,
        ])
        DispatchQueue.global().async { [weak self] in self?.drain() }
    }

    func peripheralManager(
        _ peripheral: CBPeripheralManager, central: CBCentral,
        didSubscribeTo characteristic: CBCharacteristic
    ) {
        let mtu = UInt32(central.maximumUpdateValueLength + 3)
        if let conn = try? wallet.bleConnected(
            address: central.identifier.uuidString, role: .peripheral, mtu: mtu)
        {
            conns[central.identifier] = conn
            centrals[conn] = central
        }
    }

    func peripheralManager(
        _ peripheral: CBPeripheralManager, central: CBCentral,
        didUnsubscribeFrom characteristic: CBCharacteristic
    ) {
        if let conn = conns.removeValue(forKey: central.identifier) {
            centrals[conn] = nil
            try? wallet.bleDisconnected(conn: conn)
        }
    }

    func peripheralManager(_ peripheral: CBPeripheralManager, didReceiveWrite requests: [CBATTRequest]) {
        for r in requests {
            if let conn = conns[r.central.identifier], let bytes = r.value {
                try? wallet.bleReceived(conn: conn, bytes: bytes)
            }
        }
        if let first = requests.first { peripheral.respond(to: first, withResult: .success) }
    }

    func peripheralManagerIsReady(toUpdateSubscribers peripheral: CBPeripheralManager) {
        if let (conn, bytes) = pending { send(conn, bytes) }
    }

    /// Moves the library's packets to the radio, one at a time.
    private func drain() {
        while true {
            guard let action = wallet.bleNextAction(timeoutMs: 1000) else { continue }
            radio.sync {
                switch action {
                case let .write(conn, bytes): send(conn, bytes)
                case let .disconnect(conn): centrals[conn] = nil  // iOS cannot drop a central
                }
            }
            while radio.sync(execute: { pending != nil }) { usleep(1000) }
        }
    }

    private func send(_ conn: UInt64, _ bytes: Data) {
        guard let central = centrals[conn] else { pending = nil; return }
        pending = manager.updateValue(bytes, for: tx, onSubscribedCentrals: [central]) ? nil : (conn, bytes)
    }

    deinit { wallet.shutdown() }
}
