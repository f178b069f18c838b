//! Local container images built from the binaries the local backend uses.
//!
//! Where no registry can be reached, the containers backend still needs images. These are
//! `FROM scratch` images holding one binary and the shared libraries `ldd` lists for it, so
//! building them pulls nothing. An image records a fingerprint of its binary in a label, and
//! is rebuilt only when the binary changed.
//!
//! The defaults users elsewhere pull (`apache/kafka-native:3.8.0`, `redis:7`) are unchanged;
//! point `QUIESCE_KAFKA_IMAGE` and `QUIESCE_REDIS_IMAGE` at these to use them.

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use testcontainers::GenericBuildableImage;
use testcontainers::bollard::Docker;
use testcontainers::core::BuildImageOptions;
use testcontainers::runners::AsyncBuilder;

use crate::infra::local::{TANSU_VERSION, find_redis_server, find_tansu};
use crate::infra::{InfraConfig, InfraError};

/// Label holding the fingerprint of the binary an image was built from.
pub const LABEL_SOURCE: &str = "quiesce.source-fingerprint";
/// The repository prefix of local images; `QUIESCE_IMAGE_PREFIX` overrides it.
pub const DEFAULT_PREFIX: &str = "quiesce-local";
/// A build that takes longer than this has failed.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// An image that is ready to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalImage {
    /// `repo:tag`.
    pub name: String,
    /// The binary inside.
    pub source: PathBuf,
    /// True when an up-to-date image was already there.
    pub reused: bool,
    /// The variable that selects it.
    pub env_var: &'static str,
}

/// `export` lines that select the images.
pub fn exports(images: &[LocalImage]) -> String {
    images
        .iter()
        .map(|i| format!("export {}='{}'", i.env_var, i.name))
        .collect::<Vec<_>>()
        .join("\n")
}

fn prefix() -> String {
    std::env::var("QUIESCE_IMAGE_PREFIX").unwrap_or_else(|_| DEFAULT_PREFIX.to_owned())
}

/// Builds (or finds up to date) the Redis and tansu images.
pub async fn build_local_images(config: &InfraConfig) -> Result<Vec<LocalImage>, InfraError> {
    let docker =
        Docker::connect_with_local_defaults().map_err(|e| InfraError::DockerUnavailable {
            reason: e.to_string(),
        })?;
    crate::infra::docker_ping()
        .await
        .map_err(|reason| InfraError::DockerUnavailable { reason })?;
    let redis = find_redis_server(config)?;
    let tansu = find_tansu(config)?;
    let redis_version = redis_version(&redis)
        .await
        .unwrap_or_else(|| "local".to_owned());
    let prefix = prefix();
    let specs = [
        ImageSpec {
            name: format!("{prefix}/redis:{redis_version}"),
            binary: redis,
            entrypoint: None,
            env_var: "QUIESCE_REDIS_IMAGE",
        },
        ImageSpec {
            name: format!("{prefix}/tansu:{TANSU_VERSION}"),
            binary: tansu,
            entrypoint: Some("tansu"),
            env_var: "QUIESCE_KAFKA_IMAGE",
        },
    ];
    let mut built = Vec::new();
    for spec in specs {
        built.push(build(&docker, spec).await?);
    }
    Ok(built)
}

struct ImageSpec {
    name: String,
    binary: PathBuf,
    /// The binary's name when it is the image's entrypoint.
    entrypoint: Option<&'static str>,
    env_var: &'static str,
}

async fn redis_version(binary: &Path) -> Option<String> {
    let out = tokio::process::Command::new(binary)
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
    Some(v.to_owned())
}

/// A fingerprint of the binary's bytes and of the recipe, so that a changed binary or a
/// changed image layout rebuilds.
fn fingerprint(binary: &Path, libraries: &BTreeSet<PathBuf>) -> std::io::Result<String> {
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(&std::fs::read(binary)?);
    for lib in libraries {
        hasher.write(lib.as_os_str().as_encoded_bytes());
        hasher.write_u64(std::fs::metadata(lib)?.len());
    }
    hasher.write(DOCKERFILE_VERSION.as_bytes());
    Ok(format!("{:016x}", hasher.finish()))
}

const DOCKERFILE_VERSION: &str = "1";

/// The shared libraries (and the dynamic loader) `ldd` lists for `binary`. A static binary
/// has none.
async fn shared_libraries(binary: &Path) -> Result<BTreeSet<PathBuf>, String> {
    let out = tokio::process::Command::new("ldd")
        .arg(binary)
        .output()
        .await
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(BTreeSet::new());
        }
        return Err(format!("ldd {} failed: {}", binary.display(), err.trim()));
    }
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(format!(
                "{} needs {}, which is not installed",
                binary.display(),
                line.split_whitespace().next().unwrap_or(line)
            ));
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(path));
        }
    }
    Ok(libs)
}

async fn build(docker: &Docker, spec: ImageSpec) -> Result<LocalImage, InfraError> {
    let failed = |reason: String| InfraError::ImageBuild {
        image: spec.name.clone(),
        reason,
    };
    let libraries = shared_libraries(&spec.binary).await.map_err(failed)?;
    let fingerprint = fingerprint(&spec.binary, &libraries).map_err(|e| failed(e.to_string()))?;
    let image = |reused| LocalImage {
        name: spec.name.clone(),
        source: spec.binary.clone(),
        reused,
        env_var: spec.env_var,
    };
    if let Ok(existing) = docker.inspect_image(&spec.name).await {
        let label = existing
            .config
            .and_then(|c| c.labels)
            .and_then(|l| l.get(LABEL_SOURCE).cloned());
        if label.as_deref() == Some(fingerprint.as_str()) {
            return Ok(image(true));
        }
    }

    let file_name = spec
        .binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| failed("the binary path has no file name".to_owned()))?;
    let mut dockerfile = String::from("FROM scratch\nCOPY rootfs/ /\n");
    dockerfile.push_str("ENV PATH=/usr/local/bin\n");
    dockerfile.push_str(&format!("LABEL {LABEL_SOURCE}=\"{fingerprint}\"\n"));
    dockerfile.push_str("WORKDIR /tmp\n");
    if let Some(entrypoint) = spec.entrypoint {
        dockerfile.push_str(&format!("ENTRYPOINT [\"/usr/local/bin/{entrypoint}\"]\n"));
    }
    let (repo, tag) = super::containers::split_image(&spec.name);
    let mut buildable = GenericBuildableImage::new(repo, tag)
        .with_dockerfile_string(dockerfile)
        .with_file(&spec.binary, format!("rootfs/usr/local/bin/{file_name}"))
        // An empty /tmp for programs that write scratch files.
        .with_data(Vec::new(), "rootfs/tmp/.keep");
    for lib in &libraries {
        buildable = buildable.with_file(lib, format!("rootfs{}", lib.display()));
    }
    let options = BuildImageOptions::new().with_skip_if_exists(false);
    match tokio::time::timeout(BUILD_TIMEOUT, buildable.build_image_with(options)).await {
        Ok(Ok(_)) => Ok(image(false)),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed(format!("took longer than {BUILD_TIMEOUT:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ldd_lists_the_loader_and_libc() {
        let libs = shared_libraries(Path::new("/bin/ls")).await.unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
    }

    #[test]
    fn exports_select_the_images() {
        let image = LocalImage {
            name: "quiesce-local/redis:7.0.15".into(),
            source: "/usr/bin/redis-server".into(),
            reused: true,
            env_var: "QUIESCE_REDIS_IMAGE",
        };
        assert_eq!(
            exports(&[image]),
            "export QUIESCE_REDIS_IMAGE='quiesce-local/redis:7.0.15'"
        );
    }
}
