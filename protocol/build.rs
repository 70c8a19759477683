//! Compiles `proto/link.proto` with `protox` (pure Rust), so building the
//! workspace needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/link.proto");
    let fds = protox::compile(["link.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".turbochat.link.v1.Deliver.payload")
        .bytes(".turbochat.link.v1.JsonReply.json")
        .bytes(".turbochat.link.v1.UserEvent.payload")
        .compile_fds(fds)?;
    Ok(())
}
