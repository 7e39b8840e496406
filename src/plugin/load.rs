//! Loading a plugin: the library opened once per process (and never closed: a plugin is
//! unloaded only at exit), its init function called once, and what it returned checked
//! before any connection is given to it.

use std::fmt;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::abi::{Init, Plugin, PLUGIN_VERSION_0};

/// A loaded plugin: its library (kept open for the life of the process) and its structure.
pub struct Loaded {
    pub path: PathBuf,
    pub init: String,
    plugin: NonNull<Plugin>,
    /// Its plugin threads still running (`destroy` waits for none).
    pub(super) threads: AtomicUsize,
    _library: libloading::Library,
}

// SAFETY: the plugin structure is data the plugin returned for the life of its library, which
// stays loaded; wsgate only reads it. Calling its callbacks from another thread than the one
// that loaded it is the header's contract (they run on plugin threads).
unsafe impl Send for Loaded {}
// SAFETY: as for `Send`: shared references only read the structure.
unsafe impl Sync for Loaded {}

impl Loaded {
    /// The plugin's structure, checked at load.
    pub fn plugin(&self) -> &Plugin {
        // SAFETY: non-null, checked at load, and valid while the library is loaded (for as
        // long as `self` lives, which owns it).
        unsafe { self.plugin.as_ref() }
    }
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {} ({})", self.path.display(), self.init)
    }
}

/// Why a plugin cannot be used: each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `dlopen` failed (no such file, not a shared library, missing dependencies): its message.
    Open(String),
    /// The library has no such function.
    NoInit(String),
    /// The init function returned NULL.
    Null,
    /// The structure is smaller than version 0's.
    TooSmall(u32),
    /// A structure version other than 0.
    Version(u32),
    /// `on_message` is NULL: it is the one callback every plugin must have.
    NoOnMessage,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Open(why) => write!(f, "cannot load it: {why}"),
            LoadError::NoInit(name) => write!(f, "it has no function {name:?}"),
            LoadError::Null => write!(f, "its init function returned NULL"),
            LoadError::TooSmall(size) => {
                write!(f, "its WebSocketPlugin says size {size}, smaller than version 0's {}", size_of::<Plugin>())
            }
            LoadError::Version(v) => write!(f, "its WebSocketPlugin is version {v}; wsgate knows version 0"),
            LoadError::NoOnMessage => write!(f, "its on_message is NULL (every plugin must have one)"),
        }
    }
}

/// Loads the plugin `init` of the library at `path`, or returns the one already loaded: a
/// library is opened and its init function called once per process, whatever the number of
/// routes, workers and reloads naming it.
pub fn load(path: &Path, init: &str) -> Result<Arc<Loaded>, LoadError> {
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = loaded.iter().find(|l| l.path == path && l.init == init) {
        return Ok(Arc::clone(known));
    }
    // SAFETY: loading runs the library's initialisers: in-process code the operator chose to
    // run by naming it in the configuration (documented: a plugin is part of the server).
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open(e.to_string()))?;
    // SAFETY: the symbol is declared in the header as `WS_Init`, a C function of no arguments
    // returning the plugin's structure; the library stays loaded while the pointer is used.
    let init_fn: Init =
        unsafe { *library.get::<Init>(init.as_bytes()).map_err(|_| LoadError::NoInit(init.to_string()))? };
    // SAFETY: calling the plugin's init function, as the header specifies it.
    let plugin = NonNull::new(unsafe { init_fn() }).ok_or(LoadError::Null)?;
    // SAFETY: non-null, and the plugin's static data while the library is loaded. Only the
    // two leading 32-bit fields are read before the size is known to cover the rest.
    let (size, version) = unsafe { ((*plugin.as_ptr()).size, (*plugin.as_ptr()).version) };
    if version != PLUGIN_VERSION_0 {
        return Err(LoadError::Version(version));
    }
    if (size as usize) < size_of::<Plugin>() {
        return Err(LoadError::TooSmall(size));
    }
    // SAFETY: the size covers the whole version-0 structure.
    if unsafe { plugin.as_ref() }.on_message.is_none() {
        return Err(LoadError::NoOnMessage);
    }
    let new = Arc::new(Loaded {
        path: path.to_path_buf(),
        init: init.to_string(),
        plugin,
        threads: AtomicUsize::new(0),
        _library: library,
    });
    loaded.push(Arc::clone(&new));
    Ok(new)
}

/// Every plugin this process loaded.
static LOADED: Mutex<Vec<Arc<Loaded>>> = Mutex::new(Vec::new());

/// The process is exiting: each plugin's `destroy`, once, unless one of its threads is still
/// in a callback (then the plugin may still be running, and is left as it is). The libraries
/// stay loaded to the end.
pub fn destroy_all() {
    let loaded = std::mem::take(&mut *LOADED.lock().unwrap_or_else(PoisonError::into_inner));
    for l in loaded {
        if l.threads.load(Ordering::Acquire) > 0 {
            log::warn!("{l:?}: a callback is still running; not calling its destroy");
            std::mem::forget(l);
            continue;
        }
        if let Some(destroy) = l.plugin().destroy {
            // SAFETY: the plugin's own function, called once, with its own structure, after
            // every callback returned.
            unsafe { destroy(l.plugin.as_ptr()) };
        }
        // Never unloaded: a thread the plugin started may still run its code.
        std::mem::forget(l);
    }
}
