//! The host's errors: one enum per layer, messages lowercase, user input in backticks.

use crate::sha::Sha256;
use std::path::PathBuf;

/// Loading or calling one plugin failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The bytes do not start with the wasm magic number.
    #[error("not a WebAssembly module (no `\\0asm` header)")]
    NotWasm,
    /// Wasmtime refused the module (truncated, malformed, unsupported feature).
    #[error("invalid WebAssembly module: {reason}")]
    InvalidModule {
        /// Wasmtime's explanation.
        reason: String,
    },
    /// The module is larger than [`Limits::max_module_bytes`](crate::Limits::max_module_bytes).
    #[error("module of {len} bytes exceeds the module size limit of {max} bytes")]
    ModuleTooLarge {
        /// The module's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are a WebAssembly component; plugins are core modules.
    #[error("a WebAssembly component, not a core module (see sdk/ABI.md)")]
    NotCoreModule,
    /// The module declares more of something than the host compiles or instantiates.
    #[error("module declares {count} {what}, over the limit of {max}")]
    TooMany {
        /// What (`functions`, `globals`, `table elements`, `data segments`, ...).
        what: &'static str,
        /// How many it declares.
        count: u64,
        /// The limit.
        max: u64,
    },
    /// One function body is larger than [`Limits::max_function_bytes`](crate::Limits::max_function_bytes).
    #[error("a function body of {len} bytes exceeds the function size limit of {max} bytes")]
    FunctionTooLarge {
        /// The body's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The module imports something outside Keyway's host ABI (WASI included).
    #[error("import `{module}::{name}` is not part of Keyway's host ABI (plugins may import only `keyway::log`)")]
    ForbiddenImport {
        /// The import's module.
        module: String,
        /// The import's name.
        name: String,
    },
    /// The module imports the ABI's one import with another type.
    #[error("import `{module}::{name}` has type `{found}`, the host ABI's is `{expected}`")]
    ImportType {
        /// The import's module.
        module: &'static str,
        /// The import's name.
        name: &'static str,
        /// The type it declares, in WAT.
        found: String,
        /// The type the ABI gives it, in WAT.
        expected: &'static str,
    },
    /// A required export is missing or has the wrong type.
    #[error("export `{export}` is missing or has the wrong type: {reason}")]
    BadExport {
        /// The export's name.
        export: String,
        /// What is wrong.
        reason: String,
    },
    /// `keyway_abi_version` answered a version this host does not speak.
    #[error("plugin speaks ABI version {found}, this host speaks {expected}")]
    AbiVersion {
        /// What the plugin said.
        found: i32,
        /// What the host expected: `versions 1, 2, 3, 4`, or the version the plugin's
        /// first instance answered.
        expected: String,
    },
    /// The manifest declares a hook the module does not export.
    #[error("hook `{hook}` is not exported (no `{export}`)")]
    HookNotExported {
        /// The hook's manifest name.
        hook: &'static str,
        /// The missing export.
        export: &'static str,
    },
    /// The input exceeds the host's cap.
    #[error("input of {len} bytes exceeds the cap of {max} bytes")]
    InputTooLarge {
        /// The input's size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The plugin answered more bytes than the host's cap.
    #[error("output of {len} bytes exceeds the cap of {max} bytes")]
    OutputTooLarge {
        /// The output's size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// `keyway_alloc` answered 0, for any length (0 included: ABI.md asks for a non-zero
    /// address even for an empty buffer).
    #[error("`keyway_alloc({len})` answered 0; it must answer a non-zero address, for an empty buffer too")]
    AllocFailed {
        /// The length asked for.
        len: usize,
    },
    /// A pointer the plugin answered lies outside its memory.
    #[error("{what} out of bounds: {len} bytes at {ptr}, memory holds {memory} bytes")]
    OutOfBounds {
        /// Which buffer.
        what: &'static str,
        /// The address.
        ptr: usize,
        /// The length.
        len: usize,
        /// The memory's size.
        memory: usize,
    },
    /// The call used up its fuel ([`Limits::fuel`](crate::Limits::fuel)), which also
    /// pays for a fresh instance's instantiation and configuration and for host calls.
    #[error(
        "ran out of fuel in {during}: the fuel limit is {fuel} units per call, a fresh instance's set-up and host calls included"
    )]
    FuelExhausted {
        /// The budget per call.
        fuel: u64,
        /// What was running: `instantiation` or an export in backticks.
        during: &'static str,
    },
    /// The plugin tried to grow its memory beyond the cap.
    #[error("exceeded the memory cap of {limit} bytes")]
    MemoryLimit {
        /// The cap.
        limit: usize,
    },
    /// The plugin tried to grow a table beyond [`Limits::max_table_elements`](crate::Limits::max_table_elements).
    #[error("exceeded the table limit of {limit} elements")]
    TableLimit { limit: usize },
    /// The plugin overflowed its stack (deep recursion).
    #[error("wasm stack overflow (the cap is {limit} bytes; deep recursion?)")]
    StackOverflow {
        /// The cap.
        limit: usize,
    },
    /// Any other trap.
    #[error("trapped: {trap}{}", log_suffix(.log))]
    Trap {
        /// Wasmtime's description.
        trap: String,
        /// What the plugin logged before trapping (a Rust plugin logs its panic message).
        log: String,
    },
    /// Instantiation failed.
    #[error("cannot instantiate: {reason}")]
    Instantiate {
        /// Wasmtime's explanation.
        reason: String,
    },
    /// The plugin's output is not a valid encoding of the hook's answer.
    #[error("cannot decode the plugin's output: {reason}")]
    Decode {
        /// Postcard's explanation.
        reason: String,
    },
    /// The plugin answered an error of its own.
    #[error("plugin error: {message}")]
    Guest {
        /// The plugin's message, verbatim.
        message: String,
    },
    /// A hook answered more of something than the host keeps.
    #[error("answered {count} {what}, over the limit of {max}")]
    OutputLimit {
        /// What (`notifications for one event`, `bytes in a notification's body`, ...).
        what: &'static str,
        /// How many it answered.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A door rule answered a per-person state larger than the host keeps.
    #[error("state of {len} bytes exceeds the cap of {max} bytes")]
    StateTooLarge {
        /// The state's size.
        len: usize,
        /// The cap.
        max: usize,
    },
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (plugin log: {log})")
    }
}

impl PluginError {
    /// Whether the instance that produced this error must be thrown away. Only a plugin
    /// that answered cleanly (an error of its own included) is reused.
    #[must_use]
    pub const fn discards_instance(&self) -> bool {
        !matches!(
            self,
            PluginError::Guest { .. }
                | PluginError::Decode { .. }
                | PluginError::InputTooLarge { .. }
                | PluginError::StateTooLarge { .. }
                | PluginError::OutputLimit { .. }
        )
    }
}

/// A role table from a roles plugin is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleTableError {
    /// No role at all.
    #[error("the role table is empty")]
    Empty,
    /// A role name is empty, longer than 64 bytes, or has control or invisible
    /// characters.
    #[error("role name `{name}` must be 1 to 64 printable bytes")]
    BadName {
        /// The name, printable.
        name: String,
    },
    /// Role ids index 64-bit masks.
    #[error("role `{name}` has id {id}; ids must be below 64")]
    IdTooLarge {
        /// The role.
        name: String,
        id: u16,
    },
    /// Two roles share an id.
    #[error("role id {id} is declared twice")]
    DuplicateId { id: u16 },
    /// Two roles share a name.
    #[error("role name `{name}` is declared twice")]
    DuplicateName { name: String },
    /// A role refers to a role id that is not in the table.
    #[error("role `{role}` refers to unknown role id {id} in `{field}`")]
    UnknownRole {
        /// The referring role.
        role: String,
        field: &'static str,
        /// The unknown id.
        id: u16,
    },
    /// More than 64 distinct capabilities.
    #[error("more than 64 capabilities (at `{name}`)")]
    TooManyCapabilities {
        /// The first capability that did not fit.
        name: String,
    },
    /// A capability name is empty or not `lowercase.dotted`.
    #[error("capability `{name}` of role `{role}` is not a lowercase dotted name")]
    BadCapability { role: String, name: String },
}

/// A policy bundle failed to load or validate. The running bundle, if any, stays.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A bundle file is not a regular file (a device, a pipe, a directory), or a link to
    /// one.
    #[error("`{path}` is not a regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// A bundle file is larger than its limit.
    #[error("`{path}` is larger than the limit of {max} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML, or not a valid manifest.
    #[error("invalid manifest `{path}`: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `.wasm` file does not have the hash the manifest pins.
    #[error("plugin `{plugin}`: `{file}` has sha256 {found}, the manifest pins {expected}")]
    HashMismatch {
        plugin: String,
        file: String,
        /// The manifest's hash.
        expected: String,
        /// The file's hash.
        found: Sha256,
    },
    /// A plugin failed to load, validate or answer.
    #[error("plugin `{plugin}`: {source}")]
    Plugin {
        plugin: String,
        /// What went wrong.
        source: PluginError,
    },
    /// The bundle lacks a door rule that doors attach: swapping it in would leave them
    /// without their rule.
    #[error(
        "bundle `{bundle}` has no door rule `{rule}`, which doors {doors:?} attach; detach it (or attach another rule) before the swap"
    )]
    RuleStillAttached {
        /// The bundle refused.
        bundle: String,
        /// The rule it lacks.
        rule: String,
        /// The doors that attach it.
        doors: Vec<u32>,
    },
    /// A rule of the bundle refuses the configuration a door attached it with (or
    /// takes none), so the bundle cannot run.
    #[error(
        "bundle `{bundle}` cannot be swapped in: {reason}; change the door's settings to ones both versions take, or detach the rule, before the swap"
    )]
    DoorConfigRefused {
        /// The bundle refused.
        bundle: String,
        /// The refusal, naming the rule and the door.
        reason: String,
    },
    /// The manifest's structure breaks a rule (hooks, counts).
    #[error("{0}")]
    Invalid(String),
    /// The roles plugin's table is inconsistent.
    #[error("plugin `{plugin}`: invalid role table: {source}")]
    Roles {
        /// The roles plugin.
        plugin: String,
        /// What is wrong.
        source: RoleTableError,
    },
}
