// sqlx::migrate! embeds the migration directories at compile time; a new file in one of
// them changes no Rust source, so without this a build would keep the old set.
fn main() {
    for dir in ["migrations", "src/db/migrations", "src/replay/migrations"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
