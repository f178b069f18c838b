//! Hostile targets (leader): programs built to fool a judge, run for real, each with the verdict it
//! must get (scenarios/hostile/HOSTILE.md lists them all). None of them may PASS.

#[allow(unused_imports)]
use crate::util::*;
