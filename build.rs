// Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the migrations folders.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
