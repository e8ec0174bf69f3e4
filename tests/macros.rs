//! The macros (`#[procactor::main]`, `#[procactor::actor]`, `#[derive(Message)]`) work on real
//! programs, and their misuse gives a compile error on the offending span (pinned with trybuild).

#[test]
fn main_attribute() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/main_ok.rs");
    t.compile_fail("tests/ui/main_with_params.rs");
    t.compile_fail("tests/ui/main_async.rs");
    t.compile_fail("tests/ui/main_with_arguments.rs");
    t.compile_fail("tests/ui/main_on_a_struct.rs");
}

#[test]
fn actor_attribute() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/actor_ok.rs");
    t.compile_fail("tests/ui/actor_self_by_value.rs");
    t.compile_fail("tests/ui/actor_generic_method.rs");
    t.compile_fail("tests/ui/actor_not_serde.rs");
    t.compile_fail("tests/ui/actor_borrowed_arg.rs");
    t.compile_fail("tests/ui/actor_reserved_name.rs");
    t.compile_fail("tests/ui/actor_without_init.rs");
    t.compile_fail("tests/ui/actor_several_mistakes.rs");
    t.compile_fail("tests/ui/actor_bad_name_argument.rs");
    t.compile_fail("tests/ui/hosted_private_method.rs");
}

#[test]
fn entry_attribute() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/entry_on_an_inherent_impl.rs");
}

/// After a mistake the macro still emits a stand-in for what it generates, so the uses of the
/// actor elsewhere compile and the mistake is the only error.
#[test]
fn actor_errors_do_not_cascade() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/actor_no_cascade.rs");
    t.compile_fail("tests/ui/actor_without_init_no_cascade.rs");
}

#[test]
fn message_derive() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/message_on_union.rs");
    t.compile_fail("tests/ui/message_field_not_message.rs");
}

/// A wrong target for `Process::new`, `Pool::map` or `Executor::submit` gets procactor's message
/// saying what to write instead, not only a type mismatch.
#[test]
fn wrong_targets_say_what_to_write() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/target_ok.rs");
    t.compile_fail("tests/ui/target_capturing_closure.rs");
    t.compile_fail("tests/ui/target_capturing_copy_closure.rs");
    t.compile_fail("tests/ui/target_borrowed_argument.rs");
    t.compile_fail("tests/ui/target_borrowed_value.rs");
    t.compile_fail("tests/ui/target_method.rs");
    t.compile_fail("tests/ui/target_no_arg_pointer.rs");
    t.compile_fail("tests/ui/target_not_a_function.rs");
}
