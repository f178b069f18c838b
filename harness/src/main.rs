//! The `quiesce` command. All of it lives in the library; see `quiesce::cli`.

fn main() {
    std::process::exit(quiesce::cli::main());
}
