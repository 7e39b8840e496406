//! Connection ids: where a connection is (its worker and slab key) and which occupant of
//! that slot it is (a generation), in one `u64` that is also its poll token.
//!
//! Layout: slab key in bits 0–31, generation in bits 32–53, the worker's index in bits
//! 54–61, bit 62 set on the token of the socket the connection's app owns (a backend link),
//! bit 63 clear (listener and signal tokens have it set). An id is unique in the process
//! for as long as its connection lives, and a stale event (for a slot's earlier occupant)
//! never matches the current one.

const KEY_BITS: u32 = 32;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;
const GEN_MASK: u64 = 0x3F_FFFF;
const WORKER_SHIFT: u32 = 54;
const WORKER_MASK: u64 = 0xFF;
const APP_SOCKET_BIT: u64 = 1 << 62;

/// Tokens from this value up are the loop's own (listeners, signals, wakers).
pub const FIRST_LOOP_TOKEN: usize = 1 << 63;

/// The id of slot `key` on `worker`, for the occupant numbered `generation` (wrapped).
pub fn compose(worker: usize, generation: u64, key: usize) -> u64 {
    debug_assert!((worker as u64) <= WORKER_MASK && (key as u64) <= KEY_MASK);
    ((worker as u64) << WORKER_SHIFT) | ((generation & GEN_MASK) << KEY_BITS) | key as u64
}

/// The slab key of the connection with this id.
pub fn key_of(id: u64) -> usize {
    (id & KEY_MASK) as usize
}

/// The index of the worker serving the connection with this id.
pub fn worker_of(id: u64) -> usize {
    ((id >> WORKER_SHIFT) & WORKER_MASK) as usize
}

/// The poll token of the socket the connection's app owns.
pub fn app_socket_token(id: u64) -> usize {
    (id | APP_SOCKET_BIT) as usize
}

/// A connection's poll token read back: its id, and whether the event is for the app's own
/// socket rather than the client's.
pub fn from_token(token: usize) -> (u64, bool) {
    let token = token as u64;
    (token & !APP_SOCKET_BIT, token & APP_SOCKET_BIT != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_says_where_its_connection_is() {
        let id = compose(7, 12345, 4242);
        assert_eq!((worker_of(id), key_of(id)), (7, 4242));
        assert_ne!(id, compose(7, 12346, 4242), "the next occupant of a slot has another id");
        assert_eq!(compose(1, GEN_MASK + 5, 3), compose(1, 4, 3), "the generation wraps");
        assert!((compose(255, u64::MAX, KEY_MASK as usize) as usize) < FIRST_LOOP_TOKEN);
    }

    #[test]
    fn the_app_socket_token_reads_back() {
        let id = compose(3, 9, 17);
        assert_eq!(from_token(id as usize), (id, false));
        assert_eq!(from_token(app_socket_token(id)), (id, true));
        assert!(app_socket_token(compose(255, u64::MAX, KEY_MASK as usize)) < FIRST_LOOP_TOKEN);
    }
}
