using System.Security.Cryptography;

namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// Content digests in the OCI form <c>sha256:&lt;64 lowercase hex&gt;</c>, the only algorithm the cache
/// stores. Digests arrive from registries and manifests, so every one is checked before it becomes
/// part of a file path.
/// </summary>
public static class ContentDigest
{
    /// <summary>The algorithm prefix of every digest the cache accepts.</summary>
    public const string Sha256Prefix = "sha256:";

    /// <summary>Whether <paramref name="digest"/> is a well-formed SHA-256 digest.</summary>
    public static bool IsValid(string? digest)
    {
        if (digest is null || digest.Length != Sha256Prefix.Length + 64
            || !digest.StartsWith(Sha256Prefix, StringComparison.Ordinal))
        {
            return false;
        }

        foreach (char c in digest.AsSpan(Sha256Prefix.Length))
        {
            if (!char.IsAsciiDigit(c) && c is not (>= 'a' and <= 'f'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Returns <paramref name="digest"/> unchanged, or fails with <c>InvalidDigest</c>.</summary>
    public static string Validate(string? digest)
    {
        if (!IsValid(digest))
        {
            throw new SandboxException("InvalidDigest", SandboxErrorKind.InvalidArgument,
                $"'{digest}' is not a sha256 content digest (sha256: followed by 64 lowercase hex digits).",
                digest);
        }

        return digest!;
    }

    /// <summary>The hex part of a valid digest, which names the blob's file.</summary>
    public static string Hex(string digest) => Validate(digest)[Sha256Prefix.Length..];

    /// <summary>The digest of <paramref name="content"/>.</summary>
    public static string Of(ReadOnlySpan<byte> content) => FromHash(SHA256.HashData(content));

    /// <summary>The digest form of a finished SHA-256 hash.</summary>
    public static string FromHash(ReadOnlySpan<byte> sha256) =>
        Sha256Prefix + Convert.ToHexString(sha256).ToLowerInvariant();

    /// <summary>The failure for content whose digest or size is not the one it was fetched by.</summary>
    internal static SandboxException Mismatch(string expected, string actual, long size, object? target) =>
        new("BlobDigestMismatch", SandboxErrorKind.InvalidResult,
            $"The content fetched for {expected} has digest {actual} ({size} bytes); it was discarded.",
            target ?? expected)
        {
            Hint = "The registry or something between it and this host altered the content. Pull again; "
                + "if it persists, the image in the registry is corrupt.",
        };
}
