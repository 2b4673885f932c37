//! What the engine tells its user while it works. The engine never prints: a front end
//! passes a [`Reporter`] and decides where the lines go (a terminal, a log, nowhere).

/// Receives the engine's progress lines.
pub trait Reporter: Send + Sync {
    /// A line about what the engine is doing on the caller's behalf (`Unable to find image
    /// ... locally`), as Docker writes to stderr.
    fn notice(&self, line: &str);
    /// A line of the operation's own output (a build's steps), as Docker writes to stdout.
    fn output(&self, line: &str);
}

/// Drops every line.
pub struct Silent;

impl Reporter for Silent {
    fn notice(&self, _: &str) {}
    fn output(&self, _: &str) {}
}
