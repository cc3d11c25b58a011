using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.RegularExpressions;
using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// A parsed image reference, following the grammar of the distribution project's reference package:
/// <c>[registry/]repository[:tag][@digest]</c>, with Docker Hub's short names filled in, so that
/// <c>python</c> is <c>docker.io/library/python:latest</c>.
/// </summary>
public sealed partial record ImageReference
{
    /// <summary>The registry name Docker Hub images carry.</summary>
    public const string DockerHub = "docker.io";

    /// <summary>The host that serves Docker Hub's registry API.</summary>
    public const string DockerHubApiHost = "registry-1.docker.io";

    /// <summary>The tag a reference with neither tag nor digest means.</summary>
    public const string DefaultTag = "latest";

    private const int MaxRepositoryLength = 255;

    private ImageReference(string registry, string repository, string? tag, string? digest)
    {
        Registry = registry;
        Repository = repository;
        Tag = tag;
        Digest = digest;
    }

    /// <summary>The registry, as written in references: <c>docker.io</c>, <c>127.0.0.1:5000</c>.</summary>
    public string Registry { get; }

    /// <summary>The repository path in the registry, such as <c>library/python</c>.</summary>
    public string Repository { get; }

    /// <summary>The tag; <c>latest</c> when the reference named neither tag nor digest.</summary>
    public string? Tag { get; }

    /// <summary>The content digest, when the reference pins one.</summary>
    public string? Digest { get; }

    /// <summary>The host (and port) whose <c>/v2/</c> API serves this registry.</summary>
    public string ApiHost => Registry == DockerHub ? DockerHubApiHost : Registry;

    /// <summary>What to ask the manifest endpoint for: the digest when pinned, else the tag.</summary>
    public string ManifestReference => Digest ?? Tag ?? DefaultTag;

    /// <summary>Parses <paramref name="text"/>; fails with <c>InvalidImageReference</c>.</summary>
    public static ImageReference Parse(string text)
    {
        if (!TryParse(text, out ImageReference? reference, out string? reason))
        {
            throw new SandboxException("InvalidImageReference", SandboxErrorKind.InvalidArgument,
                $"'{text}' is not a valid image reference: {reason}", text)
            {
                Hint = "Write it as [registry/]repository[:tag][@sha256:digest], for example python:3.12 "
                    + "or 127.0.0.1:5000/team/app.",
            };
        }

        return reference;
    }

    /// <summary>Parses <paramref name="text"/>, returning false when it is not a valid reference.</summary>
    public static bool TryParse(string? text, [NotNullWhen(true)] out ImageReference? reference) =>
        TryParse(text, out reference, out _);

    /// <summary>The same repository pinned to <paramref name="digest"/>, without a tag.</summary>
    public ImageReference WithDigest(string digest) =>
        new(Registry, Repository, null, ContentDigest.Validate(digest));

    /// <summary>The same repository with <paramref name="tag"/> and no digest.</summary>
    public ImageReference WithTag(string tag)
    {
        if (!TagPattern().IsMatch(tag))
        {
            throw new SandboxException("InvalidImageReference", SandboxErrorKind.InvalidArgument,
                $"'{tag}' is not a valid tag.", tag);
        }

        return new ImageReference(Registry, Repository, tag, null);
    }

    /// <summary>The canonical text: <c>registry/repository[:tag][@digest]</c>.</summary>
    public override string ToString() =>
        $"{Registry}/{Repository}{(Tag is null ? "" : ":" + Tag)}{(Digest is null ? "" : "@" + Digest)}";

    private static bool TryParse(
        string? text,
        [NotNullWhen(true)] out ImageReference? reference,
        [NotNullWhen(false)] out string? reason)
    {
        reference = null;
        if (string.IsNullOrWhiteSpace(text))
        {
            reason = "it is empty.";
            return false;
        }

        if (text.Length > 4096 || text.Any(char.IsWhiteSpace))
        {
            reason = "it holds white space or is too long.";
            return false;
        }

        string rest = text;
        string? digest = null;
        int at = rest.IndexOf('@', StringComparison.Ordinal);
        if (at >= 0)
        {
            digest = rest[(at + 1)..];
            rest = rest[..at];
            if (!ContentDigest.IsValid(digest))
            {
                reason = $"'{digest}' is not a sha256 digest (sha256: and 64 lowercase hex digits).";
                return false;
            }
        }

        string? tag = null;
        int colon = rest.LastIndexOf(':');
        if (colon > rest.LastIndexOf('/'))
        {
            tag = rest[(colon + 1)..];
            rest = rest[..colon];
            if (!TagPattern().IsMatch(tag))
            {
                reason = $"'{tag}' is not a valid tag (letters, digits, '_', '.', '-'; at most 128).";
                return false;
            }
        }

        string registry = DockerHub;
        string repository = rest;
        int slash = rest.IndexOf('/', StringComparison.Ordinal);
        if (slash > 0 && LooksLikeRegistry(rest[..slash]))
        {
            registry = rest[..slash];
            repository = rest[(slash + 1)..];
            if (!IsValidRegistry(registry))
            {
                reason = $"'{registry}' is not a valid registry host[:port].";
                return false;
            }
        }

        if (registry is "index.docker.io" or DockerHubApiHost)
        {
            registry = DockerHub;
        }

        if (registry == DockerHub && !repository.Contains('/', StringComparison.Ordinal))
        {
            repository = "library/" + repository;
        }

        if (repository.Length == 0 || !RepositoryPattern().IsMatch(repository))
        {
            reason = $"'{repository}' is not a valid repository (lowercase letters, digits and "
                + "separators, in '/'-separated parts).";
            return false;
        }

        if (repository.Length > MaxRepositoryLength)
        {
            reason = $"the repository is longer than {MaxRepositoryLength} characters.";
            return false;
        }

        tag ??= digest is null ? DefaultTag : null;
        reference = new ImageReference(registry, repository, tag, digest);
        reason = null;
        return true;
    }

    private static bool LooksLikeRegistry(string first) =>
        first.Contains('.', StringComparison.Ordinal) || first.Contains(':', StringComparison.Ordinal)
        || first == "localhost" || first.Any(char.IsAsciiLetterUpper);

    private static bool IsValidRegistry(string registry)
    {
        Match match = RegistryPattern().Match(registry);
        if (!match.Success)
        {
            return false;
        }

        Group port = match.Groups["port"];
        return !port.Success
            || (int.TryParse(port.Value, NumberStyles.None, CultureInfo.InvariantCulture, out int number)
                && number is > 0 and <= 65535);
    }

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", RegexOptions.CultureInvariant)]
    private static partial Regex TagPattern();

    [GeneratedRegex(@"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$",
        RegexOptions.CultureInvariant)]
    private static partial Regex RepositoryPattern();

    [GeneratedRegex(
        @"^(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*"
        + @"[A-Za-z0-9]))*|\[[0-9A-Fa-f:.]+\])(?::(?<port>[0-9]{1,5}))?$",
        RegexOptions.CultureInvariant)]
    private static partial Regex RegistryPattern();
}
