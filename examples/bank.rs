//! Two bank accounts, each an actor in its own process, and a transfer between them: the source
//! account is given a ref to the destination (refs travel in messages) and pays it directly.
//!
//! `cargo run --release --example bank`

use procactor::ActorRef;

struct Account {
    owner: String,
    cents: i64,
}

#[procactor::actor]
impl Account {
    fn init((owner, cents): (String, i64)) -> Self {
        Account { owner, cents }
    }

    /// Adds money (negative: takes it); the new balance.
    pub fn deposit(&mut self, cents: i64) -> i64 {
        self.cents += cents;
        self.cents
    }

    pub fn balance(&self) -> i64 {
        self.cents
    }

    /// Pays `cents` to another account, if the balance allows: the error says why not.
    pub fn transfer(&mut self, to: ActorRef<Account>, cents: i64) -> Result<i64, String> {
        if cents <= 0 {
            return Err(format!("cannot transfer {cents} cents"));
        }
        if self.cents < cents {
            return Err(format!("{} has only {} cents", self.owner, self.cents));
        }
        // An ask from inside a handler: the other account answers from its own process.
        to.deposit(cents)
            .map_err(|e| format!("the other account failed: {e}"))?;
        self.cents -= cents;
        Ok(self.cents)
    }
}

#[procactor::main]
fn main() -> procactor::Result<()> {
    let alice = procactor::spawn::<Account>(("alice".into(), 10_000))?;
    let bob = procactor::spawn::<Account>(("bob".into(), 500))?;
    println!(
        "alice (pid {}) has {}, bob (pid {}) has {}",
        alice.pid(),
        alice.balance()?,
        bob.pid(),
        bob.balance()?
    );

    println!(
        "alice pays bob 2,500: {:?}",
        alice.transfer(bob.clone(), 2_500)?
    );
    println!(
        "bob pays alice 9,000: {:?}",
        bob.transfer(alice.clone(), 9_000)?
    );
    println!(
        "balances now: alice {}, bob {}",
        alice.balance()?,
        bob.balance()?
    );
    assert_eq!(
        alice.balance()? + bob.balance()?,
        10_500,
        "money is neither made nor lost"
    );

    alice.stop()?;
    bob.stop()?;
    println!("alice: {}, bob: {}", alice.join()?, bob.join()?);
    Ok(())
}
