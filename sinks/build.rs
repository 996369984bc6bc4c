// sqlx::migrate! embeds the migration directory at compile time; a new file in it changes
// no Rust source, so without this a build would keep the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations/postgres");
}
