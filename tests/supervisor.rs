//! Supervisors with real crashes: strategies, restart policies, restart intensity, and names that
//! follow the restarted child.

mod common;

use std::time::Duration;

use common::{eventually, pid_alive, BOUND};
use procactor::{
    actor::ChildSpec, actor::Restart, actor::Strategy, actor::Supervisor, actor::SupervisorRef,
    Error, ExitReason,
};

procactor::test_support!();

/// Stops the supervisor when dropped (its children go with it), on the failure path too.
struct Guard(SupervisorRef);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.join();
    }
}

pub struct Worker {
    n: u32,
}

#[procactor::actor]
impl Worker {
    fn init(_: ()) -> Self {
        Worker { n: 0 }
    }

    pub fn work(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    pub fn crash(&mut self) {
        panic!("worker crash");
    }

    pub fn quit(&mut self, ctx: &mut procactor::Context<Self>) {
        ctx.stop();
    }
}

fn pid_of(sup: &SupervisorRef, name: &str) -> Option<u32> {
    sup.which_children()
        .ok()?
        .into_iter()
        .find(|c| c.name == name)?
        .pid
}

/// Waits until child `name` runs in a process other than `old`.
fn replaced(sup: &SupervisorRef, name: &str, old: u32) -> bool {
    eventually(BOUND, || pid_of(sup, name).is_some_and(|p| p != old))
}

#[test]
fn one_for_one_restarts_only_the_crashed_child_and_the_name_follows() {
    let sup = Guard(
        Supervisor::new(Strategy::OneForOne)
            .child(ChildSpec::new::<Worker>("o4o-a", ()).unwrap())
            .child(ChildSpec::new::<Worker>("o4o-b", ()).unwrap())
            .start()
            .unwrap(),
    );
    let a = sup.0.child::<Worker>("o4o-a").unwrap();
    let b = sup.0.child::<Worker>("o4o-b").unwrap();
    assert_eq!(a.work().unwrap(), 1);
    assert_eq!(b.work().unwrap(), 1);
    assert!(matches!(a.crash(), Err(Error::ActorDied { .. })));
    assert!(replaced(&sup.0, "o4o-a", a.pid()));
    assert!(!pid_alive(a.pid()), "the crashed process is reaped");
    // The new incarnation is fresh; the sibling kept its state.
    let a2 = sup.0.child::<Worker>("o4o-a").unwrap();
    assert_eq!(a2.work().unwrap(), 1);
    assert_eq!(b.work().unwrap(), 2);
    assert_eq!(sup.0.restarts().unwrap(), 1);
    let kids = sup.0.which_children().unwrap();
    assert_eq!(kids[0].restarts, 1);
    assert_eq!(kids[1].restarts, 0);
    // A kill -9 is a crash too.
    b.kill().unwrap();
    assert!(replaced(&sup.0, "o4o-b", b.pid()));
    sup.0.stop().unwrap();
    assert_eq!(sup.0.join().unwrap(), ExitReason::Normal);
    assert!(!pid_alive(a2.pid()), "children stop with their supervisor");
}

#[test]
fn one_for_all_and_rest_for_one_restart_their_siblings() {
    let all = Guard(
        Supervisor::new(Strategy::OneForAll)
            .child(ChildSpec::new::<Worker>("o4a-a", ()).unwrap())
            .child(ChildSpec::new::<Worker>("o4a-b", ()).unwrap())
            .start()
            .unwrap(),
    );
    let (a, b) = (
        pid_of(&all.0, "o4a-a").unwrap(),
        pid_of(&all.0, "o4a-b").unwrap(),
    );
    let _ = all.0.child::<Worker>("o4a-b").unwrap().crash();
    assert!(replaced(&all.0, "o4a-b", b));
    assert!(replaced(&all.0, "o4a-a", a), "the sibling restarts too");

    let rest = Guard(
        Supervisor::new(Strategy::RestForOne)
            .child(ChildSpec::new::<Worker>("r41-a", ()).unwrap())
            .child(ChildSpec::new::<Worker>("r41-b", ()).unwrap())
            .child(ChildSpec::new::<Worker>("r41-c", ()).unwrap())
            .start()
            .unwrap(),
    );
    let pids: Vec<u32> = ["r41-a", "r41-b", "r41-c"]
        .iter()
        .map(|n| pid_of(&rest.0, n).unwrap())
        .collect();
    let _ = rest.0.child::<Worker>("r41-b").unwrap().crash();
    assert!(replaced(&rest.0, "r41-b", pids[1]));
    assert!(
        replaced(&rest.0, "r41-c", pids[2]),
        "those after it restart"
    );
    assert_eq!(
        pid_of(&rest.0, "r41-a"),
        Some(pids[0]),
        "those before it do not"
    );
}

#[test]
fn restart_policies() {
    let sup = Guard(
        Supervisor::new(Strategy::OneForOne)
            .child(
                ChildSpec::new::<Worker>("policy-transient", ())
                    .unwrap()
                    .restart(Restart::Transient),
            )
            .child(
                ChildSpec::new::<Worker>("policy-temporary", ())
                    .unwrap()
                    .restart(Restart::Temporary),
            )
            .start()
            .unwrap(),
    );
    // Transient: a crash restarts it, a normal end does not.
    let t = sup.0.child::<Worker>("policy-transient").unwrap();
    let _ = t.crash();
    assert!(replaced(&sup.0, "policy-transient", t.pid()));
    sup.0
        .child::<Worker>("policy-transient")
        .unwrap()
        .quit()
        .unwrap();
    assert!(eventually(BOUND, || pid_of(&sup.0, "policy-transient").is_none()));
    // Temporary: never restarted.
    let _ = sup.0.child::<Worker>("policy-temporary").unwrap().crash();
    assert!(eventually(BOUND, || pid_of(&sup.0, "policy-temporary").is_none()));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pid_of(&sup.0, "policy-temporary"), None);
    assert_eq!(sup.0.restarts().unwrap(), 1);
}

#[test]
fn past_its_intensity_the_supervisor_fails_upward() {
    let sup = Guard(
        Supervisor::new(Strategy::OneForOne)
            .intensity(2, Duration::from_secs(30))
            .child(ChildSpec::new::<Worker>("intense", ()).unwrap())
            .start()
            .unwrap(),
    );
    let m = sup.0.monitor().unwrap();
    for _ in 0..3 {
        let Ok(w) = sup.0.child::<Worker>("intense") else {
            break;
        };
        let _ = w.crash();
        let old = w.pid();
        // Replaced, or the supervisor gave up (it no longer answers).
        eventually(BOUND, || {
            pid_of(&sup.0, "intense").is_some_and(|p| p != old) || sup.0.restarts().is_err()
        });
    }
    let down = m.wait_timeout(BOUND).unwrap();
    match down.reason {
        ExitReason::Failed { message } => assert!(message.contains("restarts"), "{message}"),
        other => panic!("unexpected: {other:?}"),
    }
}

#[test]
fn a_child_that_cannot_start_fails_the_supervisor_start() {
    pub struct Broken;
    #[procactor::actor]
    impl Broken {
        fn init(_: ()) -> Result<Self, String> {
            Err("no database".into())
        }
        pub fn ping(&self) {}
    }
    let err = Supervisor::new(Strategy::OneForOne)
        .child(ChildSpec::new::<Broken>("broken", ()).unwrap())
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::ActorDied { .. }), "{err:?}");
    match err.exit_reason() {
        Some(ExitReason::InitFailed { message }) => {
            assert!(message.contains("no database"), "{message}")
        }
        other => panic!("unexpected: {other:?}"),
    }
}
