//! `meshpay`: the meshpay daemon and command-line tool. See `meshpay --help`.

fn main() {
    if let Err(e) = meshpay_node::cli::main() {
        eprintln!("meshpay: {e:#}");
        std::process::exit(1);
    }
}
