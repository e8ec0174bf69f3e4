use procactor::*;
use std::time::{Duration, Instant};
fn double(x: u32) -> u32 {
    x * 2
}
fn boom(_: ()) {
    panic!("boom!")
}
fn three(_: ()) {
    std::process::exit(3)
}
fn echo(c: Connection<u64>) {
    while let Ok(v) = c.recv() {
        c.send(v).unwrap();
    }
}
#[procactor::main]
fn main() -> Result<()> {
    for m in [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::ForkServer,
    ] {
        let t = Instant::now();
        let p = Process::new(double, 21).start_method(m).start()?;
        println!("{m:?}: {:?} in {:?}", p.join(), t.elapsed());
        println!(
            "  panic: {:?}",
            Process::new(boom, ()).start_method(m).start()?.join()
        );
        println!(
            "  exit: {:?}",
            Process::new(three, ()).start_method(m).start()?.join()
        );
        let (a, b) = Pipe::<u64>::duplex()?;
        let p = Process::new(echo, b).start_method(m).start()?;
        let t = Instant::now();
        for i in 0..2000 {
            a.send(i)?;
            assert_eq!(a.recv()?, i);
        }
        println!("  rtt: {:?}", t.elapsed() / 2000);
        drop(a);
        println!("  echo join: {:?}", p.join_timeout(Duration::from_secs(5)));
    }
    Ok(())
}
