// A field type that is not a `Message` (it has serde's derives only): its schema cannot be part
// of the fingerprint, so it is an error on that field's type.
#[derive(serde::Serialize, serde::Deserialize)]
struct Plain {
    x: u32,
}

#[derive(serde::Serialize, serde::Deserialize, procactor::Message)]
struct Wrapper {
    id: u64,
    inner: Plain,
}

fn main() {}
