//! Progress bars of long work (indicatif), hidden when the caller asks for quiet.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units in `template`'s style; hidden when `quiet`.
pub fn bar(len: usize, quiet: bool, template: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
    bar
}

/// A line on stderr, above the progress bar when one is drawn (a hidden bar drops its lines).
pub fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
