//! `quiesce images build`: the local images of the containers backend.

use clap::Subcommand;

use crate::exit_codes;
use crate::infra::{InfraConfig, InfraError, images};

#[derive(Debug, Subcommand)]
pub(super) enum ImagesCommand {
    /// Build the local images (`FROM scratch` + the binaries the local backend uses).
    #[command(after_help = exit_codes::HELP)]
    Build,
}

pub(super) async fn images_build() -> Result<i32, InfraError> {
    let config = {
        let mut c = InfraConfig::default();
        c.apply_env(|k| std::env::var(k).ok())?;
        c
    };
    let built = images::build_local_images(&config).await?;
    for image in &built {
        eprintln!(
            "quiesce: {} {} ({})",
            image.name,
            if image.reused { "up to date" } else { "built" },
            image.source.display()
        );
    }
    println!("{}", images::exports(&built));
    Ok(exit_codes::OK)
}
