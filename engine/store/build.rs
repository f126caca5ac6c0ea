//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the directory
//! at compile time and does not track it by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
