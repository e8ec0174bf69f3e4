// Only an actor's `pub` handlers are reachable through a proxy to it (CPython's `exposed=`): a
// private method is not a message, and a proxy has no such method.
use procactor::manager::HostedProxy;

struct Vault {
    secret: u64,
}

#[procactor::actor]
impl Vault {
    fn init(secret: u64) -> Self {
        Vault { secret }
    }

    pub fn hint(&self) -> u64 {
        self.secret % 10
    }

    fn reveal(&self) -> u64 {
        self.secret
    }
}

fn peek(v: HostedProxy<Vault>) -> u64 {
    v.hint().unwrap() + v.reveal().unwrap()
}

fn main() {
    let _ = peek;
}
