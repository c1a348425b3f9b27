// `sqlx::migrate!` embeds the migration folders at compile time; without these
// lines cargo would not rebuild when a migration file is added or edited.
fn main() {
    println!("cargo:rerun-if-changed=master-migrations");
    println!("cargo:rerun-if-changed=tenant-migrations");
}
