//! Compiles `proto/link.proto` and `proto/safety.proto` with `protox` (pure
//! Rust), so building the workspace needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/link.proto");
    println!("cargo:rerun-if-changed=proto/safety.proto");
    let fds = protox::compile(["link.proto", "safety.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".turbochat.link.v1.Deliver.payload")
        .bytes(".turbochat.link.v1.JsonReply.json")
        .bytes(".turbochat.link.v1.NotificationSettingsRequest.json")
        .bytes(".turbochat.link.v1.UserEvent.payload")
        .bytes(".turbochat.safety.v1.SafetyReply.json")
        .compile_fds(fds)?;
    Ok(())
}
