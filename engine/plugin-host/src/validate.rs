//! Cheap checks of a module before it is compiled, so that a module the host would refuse
//! costs a parse, never a compile, and a module it accepts compiles within a bounded
//! budget.
//!
//! One pass over the module's sections with `wasmparser` (no validation of function
//! bodies, no code generation) checks, in order of appearance: that it is a core module
//! (not a component), its size, every import (name and signature, against the host ABI),
//! and the counts that drive compile time and memory outside the linear-memory cap:
//! functions, the size of each function body, globals, tables and their elements, data
//! segments and their bytes, custom sections, and the memory it declares. Each refusal
//! names the limit it broke.
//!
//! Architecture Invariant: compile cost is bounded by the limits checked here. Cranelift
//! compiles function by function, so its time and memory follow the number and size of
//! functions; both are capped (see [`Limits`]) before `Module::from_binary` runs.

use crate::error::PluginError;
use crate::runtime::Limits;
use crate::text::printable;
use keyway_abi::Hook;
use wasmparser::{CompositeInnerType, Encoding, Parser, Payload, TypeRef, ValType};

/// The one import a module may have, and its type in WAT.
pub(crate) const LOG_IMPORT: (&str, &str) = ("keyway", "log");
const LOG_TYPE: &str = "(func (param i32 i32))";

/// Most bytes of a name (import, export) kept in an error message.
const MAX_NAME_IN_ERROR: usize = 64;

/// Checks `wasm` against `limits` without compiling it; answers the hooks it exports
/// (by name only: their signatures are checked once it is compiled).
pub(crate) fn check(wasm: &[u8], limits: &Limits) -> Result<Vec<Hook>, PluginError> {
    if wasm.len() > limits.max_module_bytes {
        return Err(PluginError::ModuleTooLarge {
            len: wasm.len(),
            max: limits.max_module_bytes,
        });
    }
    let invalid = |e: wasmparser::BinaryReaderError| PluginError::InvalidModule {
        reason: printable(&e.to_string(), 512),
    };
    let too_many = |what: &'static str, count: u64, max: u64| -> Result<(), PluginError> {
        if count > max {
            Err(PluginError::TooMany { what, count, max })
        } else {
            Ok(())
        }
    };
    // The module's types, by index, in WAT (`None` for a type that is not a function's),
    // for the import check.
    let mut log_types: Vec<Option<String>> = Vec::new();
    let mut functions = 0u64;
    let mut customs = 0u64;
    let mut table_elements = 0u64;
    let mut data_bytes = 0u64;
    let mut data_segments = 0u64;
    let mut hooks = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding, .. } if encoding != Encoding::Module => {
                return Err(PluginError::NotCoreModule);
            }
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(invalid)?.into_types() {
                        log_types.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => Some(func_type(f.params(), f.results())),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    check_import(import.module, import.name, &import.ty, &log_types)?;
                    if matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)) {
                        functions += 1;
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                functions += u64::from(reader.count());
                too_many("functions", functions, u64::from(limits.max_functions))?;
            }
            Payload::TableSection(reader) => {
                for table in reader {
                    table_elements = table_elements.saturating_add(table.map_err(invalid)?.ty.initial);
                }
                too_many("table elements", table_elements, u64::from(limits.max_table_elements))?;
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let bytes = memory.map_err(invalid)?.initial.saturating_mul(64 * 1024);
                    if bytes > limits.memory_bytes as u64 {
                        return Err(PluginError::MemoryLimit {
                            limit: limits.memory_bytes,
                        });
                    }
                }
            }
            Payload::GlobalSection(reader) => {
                too_many("globals", u64::from(reader.count()), u64::from(limits.max_globals))?;
            }
            Payload::DataSection(reader) => {
                data_segments += u64::from(reader.count());
                too_many("data segments", data_segments, u64::from(limits.max_data_segments))?;
                for data in reader {
                    data_bytes = data_bytes.saturating_add(data.map_err(invalid)?.data.len() as u64);
                }
                if data_bytes > limits.memory_bytes as u64 {
                    return Err(PluginError::TooMany {
                        what: "bytes of data segments",
                        count: data_bytes,
                        max: limits.memory_bytes as u64,
                    });
                }
            }
            Payload::CodeSectionStart { count, .. } => {
                too_many("function bodies", u64::from(count), u64::from(limits.max_functions))?;
            }
            Payload::CodeSectionEntry(body) => {
                let len = body.range().len();
                if len > limits.max_function_bytes {
                    return Err(PluginError::FunctionTooLarge {
                        len,
                        max: limits.max_function_bytes,
                    });
                }
            }
            Payload::CustomSection(_) => {
                customs += 1;
                too_many("custom sections", customs, MAX_CUSTOM_SECTIONS)?;
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if let Some(hook) = Hook::ALL.into_iter().find(|h| h.export_name() == export.name) {
                        hooks.push(hook);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(hooks)
}

/// Custom sections (names, producers, target features) a module may carry.
const MAX_CUSTOM_SECTIONS: u64 = 32;

fn check_import(module: &str, name: &str, ty: &TypeRef, types: &[Option<String>]) -> Result<(), PluginError> {
    if (module, name) != LOG_IMPORT {
        return Err(PluginError::ForbiddenImport {
            module: printable(module, MAX_NAME_IN_ERROR),
            name: printable(name, MAX_NAME_IN_ERROR),
        });
    }
    let found = match ty {
        TypeRef::Func(index) | TypeRef::FuncExact(index) => match types.get(*index as usize) {
            Some(Some(found)) if found == LOG_TYPE => return Ok(()),
            Some(Some(found)) => found.clone(),
            _ => format!("function type {index}"),
        },
        TypeRef::Table(_) => "a table".to_owned(),
        TypeRef::Memory(_) => "a memory".to_owned(),
        TypeRef::Global(_) => "a global".to_owned(),
        TypeRef::Tag(_) => "a tag".to_owned(),
    };
    Err(PluginError::ImportType {
        module: LOG_IMPORT.0,
        name: LOG_IMPORT.1,
        found,
        expected: LOG_TYPE,
    })
}

/// A function type in WAT: `(func (param i32 i32) (result i64))`.
fn func_type(params: &[ValType], results: &[ValType]) -> String {
    let list = |kind: &str, types: &[ValType]| {
        if types.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = types.iter().map(ToString::to_string).collect();
            format!(" ({kind} {})", names.join(" "))
        }
    };
    format!("(func{}{})", list("param", params), list("result", results))
}
