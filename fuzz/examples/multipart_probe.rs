//! Ours vs multer on one `multipart_multer` input (`boundary \n body`):
//! `cargo run --no-default-features --example multipart_probe FILE`.

fn main() {
    let data = std::fs::read(std::env::args().nth(1).unwrap()).unwrap();
    let nl = data.iter().position(|b| *b == b'\n').unwrap();
    let b = std::str::from_utf8(&data[..nl]).unwrap();
    let body = &data[nl + 1..];
    println!("multer: {:?}", tollgate_fuzz::multer_fields(b, body));
    let ours = tollgate::params::parse(&tollgate::media_type::BodyFormat::Multipart { boundary: b.into() }, body);
    println!("ours:   {:?}", ours.as_ref().map(tollgate_fuzz::pairs));
}
