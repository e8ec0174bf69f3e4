// init() is inserted first: the spawned child takes over there and runs `double`.
fn double(x: u32) -> u32 {
    x * 2
}

#[procactor::main]
fn main() -> Result<(), procactor::Error> {
    let p = procactor::Process::new(double, 21).start()?;
    assert_eq!(p.join()?, 42);
    Ok(())
}
