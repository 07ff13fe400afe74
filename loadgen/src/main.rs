//! ringway-load (being built).
fn main() {}
