//! The console's files: `webroot/` at `/`. Only what a browser needs is
//! served: `index.html`, its icon, the console's own `js/` and `css/`, and
//! the `dist/` folders of the npm packages it uses (under `/vendor/`); nothing else
//! in `webroot/` (package files, the rest of `node_modules/`) is reachable.

use std::path::{Path, PathBuf};

use actix_files::{Files, NamedFile};
use actix_web::{HttpResponse, web};

/// URL prefix → folder under the webroot.
const MOUNTS: [(&str, &str); 5] = [
    ("/js", "js"),
    ("/css", "css"),
    ("/vendor/jquery", "node_modules/jquery/dist"),
    ("/vendor/bootstrap", "node_modules/bootstrap/dist"),
    ("/vendor/chart.js", "node_modules/chart.js/dist"),
];

/// Single files served at the root.
const FILES: [&str; 2] = ["index.html", "favicon.svg"];

/// Register the console under `root`, or a page that says how to get it
/// when `root` lacks the console or its npm packages.
pub fn configure(cfg: &mut web::ServiceConfig, root: &Path) {
    if let Some(missing) = missing_part(root) {
        let message = format!(
            "distcron: the console is not installed ({missing} is missing). \
             Run `npm ci` in webroot/, or set `webroot` to its folder. \
             The HTTP API works without it."
        );
        cfg.route(
            "/",
            web::get().to(move || {
                let message = message.clone();
                async move {
                    HttpResponse::ServiceUnavailable()
                        .content_type("text/plain; charset=utf-8")
                        .body(message)
                }
            }),
        );
        return;
    }
    let index: PathBuf = root.join("index.html");
    cfg.route(
        "/",
        web::get().to(move || {
            let index = index.clone();
            async move { NamedFile::open_async(index).await }
        }),
    );
    for file in FILES {
        let path = root.join(file);
        cfg.route(
            &format!("/{file}"),
            web::get().to(move || {
                let path = path.clone();
                async move { NamedFile::open_async(path).await }
            }),
        );
    }
    for (prefix, folder) in MOUNTS {
        cfg.service(Files::new(prefix, root.join(folder)));
    }
}

/// Whether `path` is one of the console's files (public: they hold no data).
pub fn is_console_path(path: &str) -> bool {
    path == "/"
        || FILES.iter().any(|f| path.strip_prefix('/') == Some(f))
        || MOUNTS.iter().any(|(prefix, _)| {
            path.strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('/'))
        })
}

/// The first part of the console that `root` lacks, if any.
pub fn missing_part(root: &Path) -> Option<String> {
    FILES
        .into_iter()
        .chain(MOUNTS.iter().map(|(_, folder)| *folder))
        .map(|part| root.join(part))
        .find(|path| !path.exists())
        .map(|path| path.display().to_string())
}
