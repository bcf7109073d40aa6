//! decode (under construction).
