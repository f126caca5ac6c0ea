//! A plugin's configuration: the `config` table of its entry in the bundle manifest.
//!
//! The host turns the TOML table into a [`Config`], a self-describing tree, and hands it
//! over once per instance, through `keyway_configure`. Plugins read it with the typed
//! getters, which answer an error message naming the key when a value has the wrong type.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One configuration value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (TOML dates arrive as strings too).
    Str(String),
    /// An array.
    List(Vec<Value>),
    /// A table.
    Table(BTreeMap<String, Value>),
}

impl Value {
    /// A short name of the value's type, for error messages.
    #[must_use]
    pub const fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::List(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl From<Config> for Value {
    fn from(v: Config) -> Self {
        Value::Table(v.values)
    }
}

/// A plugin's configuration: a table of named values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The values by key.
    pub values: BTreeMap<String, Value>,
}

impl Config {
    /// An empty configuration.
    #[must_use]
    pub fn new() -> Self {
        Config::default()
    }

    /// The same configuration with one more value (for tests and hosts).
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.values.insert(key.to_owned(), value.into());
        self
    }

    /// Refuses a key not in `known`, so that a typo in a manifest (`window-s` for
    /// `window_s`) fails at load, where `keyway bundle check` reports it, instead of
    /// silently falling back to a default.
    ///
    /// # Errors
    /// The first unknown key, and the known ones.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.values.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) => {
                let names: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                Err(format!(
                    "unknown config key `{key}` (known: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ))
            }
        }
    }

    /// The raw value under `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// A string, if present.
    ///
    /// # Errors
    /// When the value is not a string.
    pub fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    /// An integer, if present.
    ///
    /// # Errors
    /// When the value is not an integer.
    pub fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(other) => Err(wrong_type(key, "an integer", other)),
        }
    }

    /// A boolean, if present.
    ///
    /// # Errors
    /// When the value is not a boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "a boolean", other)),
        }
    }

    /// An array of strings, if present.
    ///
    /// # Errors
    /// When the value is not an array of strings.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&str>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.as_str()),
                    other => Err(wrong_type(key, "an array of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(wrong_type(key, "an array of strings", other)),
        }
    }

    /// An array of integers, if present.
    ///
    /// # Errors
    /// When the value is not an array of integers.
    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Ok(*i),
                    other => Err(wrong_type(key, "an array of integers", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(wrong_type(key, "an array of integers", other)),
        }
    }

    /// A nested table, if present.
    ///
    /// # Errors
    /// When the value is not a table.
    pub fn table(&self, key: &str) -> Result<Option<Config>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(Config { values: t.clone() })),
            Some(other) => Err(wrong_type(key, "a table", other)),
        }
    }
}

fn wrong_type(key: &str, expected: &str, found: &Value) -> String {
    format!("config key `{key}` must be {expected}, found {}", found.type_name())
}
