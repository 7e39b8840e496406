//! Writes a self-signed certificate and its key (PEM) for trying wss:// locally.
//!
//! usage: cargo run --example gen-cert -- CERT_FILE KEY_FILE [NAME...]   (default name: localhost)

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cert_path, key_path, names @ ..] = args.as_slice() else {
        eprintln!("usage: gen-cert CERT_FILE KEY_FILE [NAME...]");
        std::process::exit(2);
    };
    let mut names = names.to_vec();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
    }
    let generated = rcgen::generate_simple_self_signed(names.clone()).expect("generate certificate");
    std::fs::write(cert_path, generated.cert.pem()).expect("write certificate");
    std::fs::write(key_path, generated.key_pair.serialize_pem()).expect("write key");
    println!("wrote {cert_path} and {key_path} for {}", names.join(", "));
}
