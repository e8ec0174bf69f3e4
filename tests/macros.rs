//! `#[procactor::main]`: the attribute works on a real program, and its misuse gives a compile
//! error on the offending span (pinned with trybuild).

#[test]
fn main_attribute() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/main_ok.rs");
    t.compile_fail("tests/ui/main_with_params.rs");
    t.compile_fail("tests/ui/main_async.rs");
    t.compile_fail("tests/ui/main_with_arguments.rs");
    t.compile_fail("tests/ui/main_on_a_struct.rs");
}
