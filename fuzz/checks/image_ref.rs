// The properties of image references, shared by the `image_ref` fuzz target and
// berth-images' unit tests. Pulled in with `include!`: the including module provides
// `ImageRef`, `familiar`, `split_name` and `DOCKER_HUB` (berth_images::reference).

fn reparse(text: &str, from: &str) -> ImageRef {
    ImageRef::parse(text).unwrap_or_else(|e| panic!("{text:?} (from {from:?}) does not parse again: {e}"))
}

/// Parsing never panics, and a parsed reference's normalized forms parse back to it.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(image) = ImageRef::parse(&text) else { return };
    assert!(image.tag.is_some() != image.digest.is_some(), "{text:?}: exactly one of tag and digest: {image:?}");

    // The stored name is a fixed point.
    let name = image.name();
    let again = reparse(&name, &text);
    assert_eq!(again, image, "{text:?} -> {name:?}");
    assert_eq!(again.name(), name);

    // Stored names split back into their parts.
    let (repository, tag, digest) = split_name(&name);
    assert_eq!(repository, image.repository_name(), "{name:?}");
    assert_eq!(tag, image.tag, "{name:?}");
    assert_eq!(digest, image.digest.as_ref().map(|d| d.to_string()), "{name:?}");

    // The repository alone means its latest tag.
    let bare = reparse(&image.repository_name(), &text);
    assert_eq!((&bare.registry, &bare.repository), (&image.registry, &image.repository), "{text:?}");
    assert_eq!((bare.tag.as_deref(), &bare.digest), (Some("latest"), &None), "{text:?}");

    // What is asked of the registry names the same image.
    let oci = image.to_oci(&image.registry).to_string();
    assert_eq!(reparse(&oci, &text), image, "{text:?} -> {oci:?}");

    // The short form shown to users reads back as the same repository, except where
    // Docker's own short form is ambiguous: a Docker Hub path whose first component looks
    // like a registry host ("docker.io/a.b/c" is shown as "a.b/c").
    let short = familiar(&image.repository_name());
    let ambiguous = image.registry == DOCKER_HUB
        && short.split_once('/').is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost");
    if !ambiguous {
        assert_eq!(reparse(&short, &text).repository_name(), image.repository_name(), "{text:?} -> {short:?}");
    }
}
