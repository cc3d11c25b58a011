using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Microsandbox.Engine.Images.Cache;

/// <summary>
/// The content-addressed store of layers, configs and manifests that all sandboxes share, with a
/// small index of the image references pulled into it. A blob is published by renaming a fully
/// written, fsynced and verified file into <c>blobs/sha256/&lt;hex&gt;</c>, so a crash, a digest
/// mismatch or a second process pulling the same blob never leaves a half-written blob behind.
/// </summary>
/// <remarks>
/// Layout under <see cref="Root"/>: <c>blobs/sha256/</c> the blobs; <c>incoming/</c> temporary
/// files, resumable partial downloads (<c>sha256-&lt;hex&gt;.partial</c>) and their lock files, on the
/// same file system as the blobs so that publishing is an atomic rename; <c>references/</c> one JSON
/// file per pulled reference.
/// </remarks>
public sealed class LayerCache
{
    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = true };

    /// <summary>Opens (and creates, owner-only) the cache at <paramref name="root"/>.</summary>
    public LayerCache(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        Root = Path.GetFullPath(root);
        SandboxHome.CreatePrivateDirectory(Root);
        SandboxHome.CreatePrivateDirectory(Path.Join(Root, "blobs"));
        SandboxHome.CreatePrivateDirectory(BlobsDirectory);
        SandboxHome.CreatePrivateDirectory(IncomingDirectory);
        SandboxHome.CreatePrivateDirectory(ReferencesDirectory);
    }

    /// <summary>The cache of a home: <c>$MSB_HOME/cache</c>.</summary>
    public static LayerCache ForHome(SandboxHome home)
    {
        ArgumentNullException.ThrowIfNull(home);
        return new LayerCache(home.CacheDirectory);
    }

    /// <summary>The cache folder.</summary>
    public string Root { get; }

    /// <summary>Where the blobs live, one file per digest named by its hex.</summary>
    public string BlobsDirectory => Path.Join(Root, "blobs", "sha256");

    /// <summary>Temporary and partial files; nothing here is ever read as a blob.</summary>
    public string IncomingDirectory => Path.Join(Root, "incoming");

    /// <summary>One JSON file per pulled reference.</summary>
    public string ReferencesDirectory => Path.Join(Root, "references");

    /// <summary>The file of a blob, whether or not it is cached.</summary>
    public string BlobPath(string digest) => Path.Join(BlobsDirectory, ContentDigest.Hex(digest));

    /// <summary>Whether the blob is cached (and therefore complete and verified).</summary>
    public bool Contains(string digest) => File.Exists(BlobPath(digest));

    /// <summary>The digests of all cached blobs.</summary>
    public IReadOnlyList<string> ListBlobs() =>
        [.. Directory.EnumerateFiles(BlobsDirectory)
            .Select(path => ContentDigest.Sha256Prefix + Path.GetFileName(path))
            .Where(ContentDigest.IsValid)
            .Order(StringComparer.Ordinal)];

    /// <summary>Opens a cached blob for reading; <c>BlobNotCached</c> when it is not there.</summary>
    public FileStream OpenBlob(string digest)
    {
        try
        {
            return new FileStream(BlobPath(digest), FileMode.Open, FileAccess.Read, FileShare.Read,
                bufferSize: 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
        }
        catch (FileNotFoundException e)
        {
            throw NotCached(digest, e);
        }
    }

    /// <summary>Reads a small cached blob (a manifest or a config) whole.</summary>
    public async Task<byte[]> ReadBlobAsync(string digest, CancellationToken cancellationToken)
    {
        try
        {
            return await File.ReadAllBytesAsync(BlobPath(digest), cancellationToken).ConfigureAwait(false);
        }
        catch (FileNotFoundException e)
        {
            throw NotCached(digest, e);
        }
    }

    /// <summary>
    /// Stores <paramref name="content"/> under <paramref name="digest"/> after checking that it is that
    /// content; on a mismatch (<c>BlobDigestMismatch</c>) or any failure nothing is stored. Two
    /// writers of one digest may race: each writes its own temporary file and the last rename wins,
    /// which is harmless because both hold the same bytes.
    /// </summary>
    public async Task PutAsync(string digest, Stream content, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(content);
        string hex = ContentDigest.Hex(digest);
        if (Contains(digest))
        {
            return;
        }

        string temp = Path.Join(IncomingDirectory, $"{hex}.{Guid.NewGuid():N}.tmp");
        try
        {
            var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None,
                bufferSize: 0, FileOptions.Asynchronous);
            await using (file.ConfigureAwait(false))
            {
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                byte[] buffer = new byte[1 << 17];
                long size = 0;
                int read;
                while ((read = await content.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    hash.AppendData(buffer, 0, read);
                    await file.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                    size += read;
                }

                string actual = ContentDigest.FromHash(hash.GetHashAndReset());
                if (actual != digest)
                {
                    throw ContentDigest.Mismatch(digest, actual, size, null);
                }

                await file.FlushAsync(cancellationToken).ConfigureAwait(false);
                file.Flush(flushToDisk: true);
            }

            Publish(temp, BlobPath(digest));
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>
    /// Stores bytes held in memory; see <see cref="PutAsync(string, Stream, CancellationToken)"/>.
    /// </summary>
    public async Task PutAsync(
        string digest, ReadOnlyMemory<byte> content, CancellationToken cancellationToken)
    {
        using var stream = new MemoryStream(content.ToArray(), writable: false);
        await PutAsync(digest, stream, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Starts (or resumes) downloading a blob of known size, holding its lock until the returned
    /// download is disposed; returns null when the blob is cached already. A second caller for the
    /// same digest, in this process or another, waits here until the first is done.
    /// </summary>
    public Task<BlobDownload?> BeginDownloadAsync(
        string digest, long size, CancellationToken cancellationToken) =>
        BlobDownload.BeginAsync(this, digest, size, cancellationToken);

    /// <summary>Deletes a blob; returns whether it was there.</summary>
    public bool RemoveBlob(string digest)
    {
        string path = BlobPath(digest);
        if (!File.Exists(path))
        {
            return false;
        }

        File.Delete(path);
        return true;
    }

    /// <summary>Records what a reference resolved to, replacing any earlier record atomically.</summary>
    public async Task SetReferenceAsync(CachedReference entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        ContentDigest.Validate(entry.ManifestDigest);
        string temp = Path.Join(IncomingDirectory, $"reference.{Guid.NewGuid():N}.tmp");
        try
        {
            var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None,
                bufferSize: 0, FileOptions.Asynchronous);
            await using (file.ConfigureAwait(false))
            {
                await JsonSerializer.SerializeAsync(file, entry, JsonOptions, cancellationToken)
                    .ConfigureAwait(false);
                await file.FlushAsync(cancellationToken).ConfigureAwait(false);
                file.Flush(flushToDisk: true);
            }

            File.Move(temp, ReferencePath(entry.Reference), overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }

    /// <summary>The record of a reference, or null when it was never pulled into this cache.</summary>
    public CachedReference? FindReference(string reference)
    {
        ArgumentException.ThrowIfNullOrEmpty(reference);
        CachedReference? entry = ReadReference(ReferencePath(reference));
        return entry?.Reference == reference ? entry : null;
    }

    /// <summary>Every reference pulled into this cache, by name.</summary>
    public IReadOnlyList<CachedReference> ListReferences() =>
        [.. Directory.EnumerateFiles(ReferencesDirectory, "*.json")
            .Select(ReadReference)
            .OfType<CachedReference>()
            .OrderBy(entry => entry.Reference, StringComparer.Ordinal)];

    /// <summary>Forgets a reference (its blobs stay); returns whether it was recorded.</summary>
    public bool RemoveReference(string reference)
    {
        ArgumentException.ThrowIfNullOrEmpty(reference);
        string path = ReferencePath(reference);
        if (!File.Exists(path))
        {
            return false;
        }

        File.Delete(path);
        return true;
    }

    /// <summary>
    /// Deletes temporary files that a crashed writer left in <see cref="IncomingDirectory"/> and that
    /// are older than <paramref name="age"/>. Partial downloads are kept: they are how a pull resumes.
    /// </summary>
    public int RemoveStaleTemporaryFiles(TimeSpan age)
    {
        int removed = 0;
        DateTime cutoff = DateTime.UtcNow - age;
        foreach (string path in Directory.EnumerateFiles(IncomingDirectory, "*.tmp"))
        {
            if (File.GetLastWriteTimeUtc(path) < cutoff)
            {
                File.Delete(path);
                removed++;
            }
        }

        return removed;
    }

    /// <summary>The partial download of a blob, kept between attempts.</summary>
    internal string PartialPath(string hex) => Path.Join(IncomingDirectory, $"sha256-{hex}.partial");

    /// <summary>The lock file whose holder alone may write the blob's partial download.</summary>
    internal string LockPath(string hex) => Path.Join(IncomingDirectory, $"sha256-{hex}.lock");

    /// <summary>Moves a finished, verified file into place as a blob.</summary>
    internal static void Publish(string finished, string blobPath)
    {
        // The blob folder is not fsynced after the rename (.NET cannot open a folder): after a power
        // loss a just-published blob may be missing, never present and half-written.
        try
        {
            File.Move(finished, blobPath, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException && File.Exists(blobPath))
        {
            // Windows refuses to replace a blob another writer published and a reader holds open;
            // the bytes are the same, so that blob stands.
            File.Delete(finished);
        }
    }

    private string ReferencePath(string reference)
    {
        // Hashed, because a reference holds characters (':', '/', '@') that no file name may on
        // every system; the reference itself is inside the file.
        string name = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(reference)));
        return Path.Join(ReferencesDirectory, name.ToLowerInvariant() + ".json");
    }

    private static CachedReference? ReadReference(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<CachedReference>(File.ReadAllBytes(path), JsonOptions);
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
            return null;
        }
    }

    private static SandboxException NotCached(string digest, Exception inner) =>
        new("BlobNotCached", SandboxErrorKind.NotFound, $"The blob {digest} is not in the layer cache.",
            digest, inner);
}
