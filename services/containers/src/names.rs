//! Container names: Docker's validation and its "adjective_scientist" random names.

use rand::seq::IndexedRandom;

const ADJECTIVES: &[&str] = &[
    "admiring",
    "adoring",
    "agitated",
    "amazing",
    "angry",
    "awesome",
    "blissful",
    "bold",
    "boring",
    "brave",
    "busy",
    "charming",
    "clever",
    "compassionate",
    "competent",
    "confident",
    "cool",
    "cranky",
    "crazy",
    "dazzling",
    "determined",
    "distracted",
    "dreamy",
    "eager",
    "ecstatic",
    "elastic",
    "elated",
    "elegant",
    "eloquent",
    "epic",
    "festive",
    "focused",
    "friendly",
    "frosty",
    "funny",
    "gallant",
    "gifted",
    "goofy",
    "gracious",
    "happy",
    "hardcore",
    "heuristic",
    "hopeful",
    "hungry",
    "infallible",
    "inspiring",
    "intelligent",
    "jolly",
    "jovial",
    "keen",
    "kind",
    "laughing",
    "loving",
    "lucid",
    "magical",
    "modest",
    "musing",
    "mystifying",
    "naughty",
    "nervous",
    "nice",
    "nifty",
    "nostalgic",
    "objective",
    "optimistic",
    "peaceful",
    "pedantic",
    "pensive",
    "practical",
    "priceless",
    "quirky",
    "quizzical",
    "relaxed",
    "reverent",
    "romantic",
    "sad",
    "serene",
    "sharp",
    "silly",
    "sleepy",
    "stoic",
    "strange",
    "stupefied",
    "suspicious",
    "sweet",
    "tender",
    "thirsty",
    "trusting",
    "upbeat",
    "vibrant",
    "vigilant",
    "vigorous",
    "wizardly",
    "wonderful",
    "xenodochial",
    "youthful",
    "zealous",
    "zen",
];

const SURNAMES: &[&str] = &[
    "agnesi",
    "albattani",
    "allen",
    "archimedes",
    "babbage",
    "banach",
    "bardeen",
    "bell",
    "bhabha",
    "borg",
    "bose",
    "brattain",
    "burnell",
    "cannon",
    "carson",
    "cerf",
    "chandrasekhar",
    "curie",
    "darwin",
    "davinci",
    "diffie",
    "dijkstra",
    "einstein",
    "elion",
    "engelbart",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goldberg",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hodgkin",
    "hopper",
    "hypatia",
    "jang",
    "jennings",
    "johnson",
    "kalam",
    "kepler",
    "knuth",
    "kowalevski",
    "lamarr",
    "leakey",
    "lovelace",
    "lumiere",
    "mayer",
    "mccarthy",
    "mcclintock",
    "meitner",
    "mendel",
    "mirzakhani",
    "montalcini",
    "moore",
    "morse",
    "napier",
    "newton",
    "nightingale",
    "nobel",
    "noether",
    "pascal",
    "pasteur",
    "payne",
    "perlman",
    "pike",
    "poincare",
    "ptolemy",
    "raman",
    "ramanujan",
    "ride",
    "ritchie",
    "rosalind",
    "saha",
    "sammet",
    "shannon",
    "shockley",
    "sinoussi",
    "stonebraker",
    "swanson",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "varahamihira",
    "visvesvaraya",
    "volhard",
    "wescoff",
    "wiles",
    "williams",
    "wilson",
    "wing",
    "wozniak",
    "wright",
    "yalow",
    "yonath",
];

pub fn random_name() -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or("eager");
    let surname = SURNAMES.choose(&mut rng).copied().unwrap_or("turing");
    format!("{adjective}_{surname}")
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, with an optional leading '/'.
pub fn validate(name: &str) -> Result<String, crate::error::Error> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.len() > MAX_NAME_LEN {
        return Err(crate::error::Error::InvalidArgument(format!(
            "Invalid container name ({}…, {} characters): at most {MAX_NAME_LEN} are allowed",
            bare.chars().take(32).collect::<String>(),
            bare.chars().count()
        )));
    }
    let mut chars = bare.chars();
    let valid = bare.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid { Ok(bare.to_string()) } else { Err(crate::error::Error::BadName(name.to_string())) }
}

/// Docker sets no limit, but names become host names in /etc/hosts on user networks,
/// and DNS names end at 253 characters.
pub const MAX_NAME_LEN: usize = 253;

/// A new 64-hex container id.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert_eq!(validate("/web-1").unwrap(), "web-1");
        assert_eq!(validate("a.b_c").unwrap(), "a.b_c");
        for bad in ["a", "-web", "we b", "ü1", "", "/"] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        assert!(validate(&"n".repeat(MAX_NAME_LEN)).is_ok());
        let long = validate(&"n".repeat(100_000)).unwrap_err().to_string();
        assert!(long.contains("100000 characters") && long.len() < 200, "{long}");
        let name = random_name();
        assert!(validate(&name).is_ok(), "{name}");
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }
}
