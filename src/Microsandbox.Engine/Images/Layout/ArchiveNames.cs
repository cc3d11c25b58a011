using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Engine.Images.Layout;

/// <summary>An image an export offers, with the names the export gives it.</summary>
/// <param name="Names">Full references, canonical (RepoTags, <c>io.containerd.image.name</c>).</param>
/// <param name="Tag">A tag alone (<c>org.opencontainers.image.ref.name</c> as skopeo writes it).</param>
/// <param name="Item">What the reader needs to resolve the image.</param>
internal sealed record ArchiveCandidate<T>(IReadOnlyList<string> Names, string? Tag, T Item)
{
    /// <summary>How the image is named in messages.</summary>
    public string Display => Names.Count > 0 ? string.Join(" ", Names) : Tag ?? "(unnamed)";
}

/// <summary>
/// Which image of an export to import and under which references, from <c>-Reference</c> and the
/// names the export gives. A full name in the export is used as it is; a tag alone needs a
/// repository from <c>-Reference</c>; a <c>-Reference</c> without a tag takes the export's tag.
/// </summary>
internal static class ArchiveNames
{
    /// <summary>
    /// The candidate <paramref name="reference"/> names (or the only one) and the references to
    /// record it under; <c>ImageReferenceAmbiguous</c> when several remain,
    /// <c>ImageReferenceRequired</c> when the image has no full name and none was given.
    /// </summary>
    public static (ArchiveCandidate<T> Chosen, IReadOnlyList<string> Names) Choose<T>(
        string path, IReadOnlyList<ArchiveCandidate<T>> candidates, string? reference)
    {
        if (candidates.Count == 0)
        {
            throw LayoutErrors.Invalid(path, "it lists no image");
        }

        ImageReference? wanted = reference is null ? null : ImageReference.Parse(reference);
        bool tagged = reference is not null
            && (reference.Contains('@', StringComparison.Ordinal)
                || reference[(reference.LastIndexOf('/') + 1)..].Contains(':', StringComparison.Ordinal));
        List<ArchiveCandidate<T>> matches = candidates.Count == 1 ? [.. candidates]
            : [.. candidates.Where(c => wanted is not null
                && (c.Names.Contains(wanted.ToString()) || (tagged && c.Tag == wanted.Tag)))];
        if (matches.Count != 1)
        {
            throw LayoutErrors.Ambiguous(path, candidates.Select(c => c.Display));
        }

        ArchiveCandidate<T> chosen = matches[0];
        if (wanted is not null)
        {
            ImageReference recorded = !tagged && chosen.Tag is not null ? wanted.WithTag(chosen.Tag) : wanted;
            return (chosen, [recorded.ToString()]);
        }

        if (chosen.Names.Count == 0)
        {
            throw LayoutErrors.ReferenceRequired(path, chosen.Tag is null
                ? "the export gives it no name"
                : $"the export names it only by the tag '{chosen.Tag}', which has no repository");
        }

        return (chosen, chosen.Names);
    }

    /// <summary>The canonical form of a name the export gives, or null when it is no reference.</summary>
    public static string? Canonical(string? name) =>
        ImageReference.TryParse(name, out ImageReference? parsed) ? parsed.ToString() : null;
}
