//! The values SQL statements take and give, the same for every backend: arguments that keep
//! their type even when NULL (PostgreSQL types every parameter; a NULL meant for an integer
//! column must be sent as one), and rows of plain values.

pub use rusqlite::types::Value;

/// A statement's arguments, in the order of its `?`s (built by [`crate::sql_args!`]).
pub type Args = Vec<Arg>;
/// A row a statement returned, its columns in order.
pub type Row = Vec<Value>;

/// One argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Int(i64),
    Real(f64),
    Text(String),
    /// NULL, of the type the column has.
    Null(Kind),
}

/// The type of a NULL argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Int,
    Real,
    Text,
}

impl Arg {
    /// The value as SQLite takes it (it types values, not parameters).
    pub fn to_value(&self) -> Value {
        match self {
            Arg::Int(i) => Value::Integer(*i),
            Arg::Real(r) => Value::Real(*r),
            Arg::Text(t) => Value::Text(t.clone()),
            Arg::Null(_) => Value::Null,
        }
    }
}

/// A Rust value a statement can take as an argument.
pub trait ToArg {
    /// The type its NULL has.
    const KIND: Kind;
    fn arg(self) -> Arg;
}

impl ToArg for &str {
    const KIND: Kind = Kind::Text;
    fn arg(self) -> Arg {
        Arg::Text(self.to_owned())
    }
}

impl ToArg for String {
    const KIND: Kind = Kind::Text;
    fn arg(self) -> Arg {
        Arg::Text(self)
    }
}

impl ToArg for i64 {
    const KIND: Kind = Kind::Int;
    fn arg(self) -> Arg {
        Arg::Int(self)
    }
}

impl ToArg for f64 {
    const KIND: Kind = Kind::Real;
    fn arg(self) -> Arg {
        Arg::Real(self)
    }
}

impl ToArg for bool {
    const KIND: Kind = Kind::Int;
    fn arg(self) -> Arg {
        Arg::Int(i64::from(self))
    }
}

impl ToArg for Arg {
    const KIND: Kind = Kind::Text;
    fn arg(self) -> Arg {
        self
    }
}

impl ToArg for &String {
    const KIND: Kind = Kind::Text;
    fn arg(self) -> Arg {
        Arg::Text(self.clone())
    }
}

impl ToArg for &i64 {
    const KIND: Kind = Kind::Int;
    fn arg(self) -> Arg {
        Arg::Int(*self)
    }
}

impl ToArg for crate::state::JobState {
    const KIND: Kind = Kind::Text;
    fn arg(self) -> Arg {
        Arg::Text(self.as_str().to_owned())
    }
}

impl ToArg for crate::state::AttemptOutcome {
    const KIND: Kind = Kind::Text;
    fn arg(self) -> Arg {
        Arg::Text(self.as_str().to_owned())
    }
}

impl<T: ToArg> ToArg for Option<T> {
    const KIND: Kind = T::KIND;
    fn arg(self) -> Arg {
        self.map_or(Arg::Null(T::KIND), ToArg::arg)
    }
}

/// Reads a row's value as an integer (NULL: None).
pub fn int(v: &Value) -> anyhow::Result<Option<i64>> {
    match v {
        Value::Integer(i) => Ok(Some(*i)),
        Value::Null => Ok(None),
        other => anyhow::bail!("expected an integer, found {other:?}"),
    }
}

/// Reads a row's value as a number (NULL: None).
pub fn real(v: &Value) -> anyhow::Result<Option<f64>> {
    match v {
        Value::Real(r) => Ok(Some(*r)),
        Value::Integer(i) => Ok(Some(*i as f64)),
        Value::Null => Ok(None),
        other => anyhow::bail!("expected a number, found {other:?}"),
    }
}

/// Reads a row's value as text (NULL: None).
pub fn text(v: &Value) -> anyhow::Result<Option<String>> {
    match v {
        Value::Text(t) => Ok(Some(t.clone())),
        Value::Null => Ok(None),
        other => anyhow::bail!("expected text, found {other:?}"),
    }
}
