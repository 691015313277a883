//! The MNIST files bundled in `data/mnist` load whole and look like MNIST.

use tweedie_datasets::{DatasetKind, Split, load, resolve_dir};

#[test]
fn bundled_mnist_loads_with_known_counts_and_labels() {
    let dir = std::path::Path::new(&manifest_dir()).join("../data/mnist");
    let dir = resolve_dir(DatasetKind::Mnist, Some(&dir)).unwrap();
    let train = load(DatasetKind::Mnist, Split::Train, &dir).unwrap();
    let test = load(DatasetKind::Mnist, Split::Test, &dir).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.shape, [1, 28, 28]);
    // The first labels of the original files: 5 0 4 1 9 (train) and 7 2 1 0 4 (test).
    assert_eq!(&train.labels[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&test.labels[..5], &[7, 2, 1, 0, 4]);
    let mut hist = [0usize; 10];
    train.labels.iter().for_each(|l| hist[*l as usize] += 1);
    assert_eq!(
        hist,
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    let mean =
        train.pixels.iter().map(|p| *p as f64).sum::<f64>() / train.pixels.len() as f64 / 255.0;
    assert!(
        (mean - 0.1307).abs() < 1e-3,
        "MNIST's well-known pixel mean is 0.1307, got {mean}"
    );
}

/// The package directory at run time (a test binary reused from a build cache may have been
/// compiled in another checkout, so the compile-time value can be stale).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}
