//! Repository URLs to object stores: file://, s3://, gs://, az://, memory://.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;

use super::error::RepoError;

/// Makes everything written under a `file://` repository durable (`syncfs` of its file
/// system), as an object store does before it answers a PUT; other schemes need nothing.
/// A writer calls it before the snapshot's manifest (so the manifest never names data a
/// crash could lose) and after it.
pub async fn make_durable(url: &str) -> Result<(), RepoError> {
    let Some(path) = url.strip_prefix("file://") else {
        return Ok(());
    };
    let path = std::path::PathBuf::from(path);
    tokio::task::spawn_blocking(move || {
        let dir = std::fs::File::open(&path)?;
        // SAFETY: syncfs on a descriptor we own.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .await
    .map_err(|e| RepoError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// Makes one object of a `file://` repository durable (`fdatasync`), as a pack is uploaded: the
/// writer syncs each pack while it goes on, so [`make_durable`] before the manifest has little
/// left to do. Other schemes need nothing.
pub async fn make_object_durable(url: &str, name: &str) -> Result<(), RepoError> {
    let Some(root) = url.strip_prefix("file://") else {
        return Ok(());
    };
    let path = std::path::Path::new(root).join(name);
    tokio::task::spawn_blocking(move || std::fs::File::open(&path)?.sync_data())
        .await
        .map_err(|e| RepoError::Io(std::io::Error::other(e)))??;
    Ok(())
}

/// Opens the store a URL names. Credentials and endpoints come from the environment
/// (AWS_*, GOOGLE_*, AZURE_* as object_store reads them; AWS_ENDPOINT and AWS_ALLOW_HTTP for
/// S3-compatible servers).
pub fn open_store(url: &str) -> Result<Arc<dyn ObjectStore>, RepoError> {
    let bad = || RepoError::BadUrl {
        url: url.to_string(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    match scheme {
        "file" => {
            let path = std::path::Path::new(rest);
            if !path.is_absolute() {
                return Err(bad());
            }
            std::fs::create_dir_all(path)?;
            Ok(Arc::new(
                LocalFileSystem::new_with_prefix(path)?.with_automatic_cleanup(true),
            ))
        }
        "memory" => Ok(Arc::new(InMemory::new())),
        "s3" | "gs" | "az" => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad());
            }
            let store: Arc<dyn ObjectStore> = match scheme {
                "s3" => Arc::new(
                    AmazonS3Builder::from_env()
                        .with_bucket_name(bucket)
                        .build()?,
                ),
                "gs" => Arc::new(
                    GoogleCloudStorageBuilder::from_env()
                        .with_bucket_name(bucket)
                        .build()?,
                ),
                _ => Arc::new(
                    MicrosoftAzureBuilder::from_env()
                        .with_container_name(bucket)
                        .build()?,
                ),
            };
            let prefix = prefix.trim_matches('/');
            Ok(if prefix.is_empty() {
                store
            } else {
                Arc::new(PrefixStore::new(store, Path::from(prefix)))
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_or_relative_urls_are_refused_with_the_choices() {
        for url in ["ftp://x", "file://relative/path", "no-scheme", "s3://"] {
            let err = open_store(url)
                .err()
                .unwrap_or_else(|| panic!("{url} accepted"));
            assert!(err.to_string().contains("file:///path"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_file_repository_and_its_packs_are_synced_to_disk_and_other_schemes_need_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        make_durable(&format!("file://{}", dir.path().display()))
            .await
            .expect("syncfs");
        // It really opens the directory: a missing one is an error, not a silent no-op.
        let missing = format!("file://{}/missing", dir.path().display());
        assert!(make_durable(&missing).await.is_err());
        std::fs::write(dir.path().join("pack"), b"data").expect("object");
        let url = format!("file://{}", dir.path().display());
        make_object_durable(&url, "pack").await.expect("fdatasync");
        assert!(make_object_durable(&url, "missing").await.is_err());
        make_object_durable("memory://", "pack")
            .await
            .expect("nothing to do");
        make_durable("memory://").await.expect("nothing to do");
        make_durable("s3://bucket/prefix")
            .await
            .expect("the store is durable");
    }

    #[test]
    fn file_urls_create_their_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("repo");
        open_store(&format!("file://{}", path.display())).expect("file store");
        assert!(path.is_dir());
    }
}
