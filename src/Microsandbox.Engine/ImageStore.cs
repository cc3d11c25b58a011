using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Erofs;
using Microsandbox.Engine.Images.Layout;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Engine;

/// <summary>When New-Sandbox goes to the registry for an image.</summary>
public enum PullPolicy
{
    /// <summary>Pull only when the image is not in the cache (the default).</summary>
    IfMissing,

    /// <summary>Always ask the registry, so a moved tag is followed.</summary>
    Always,

    /// <summary>Never pull: the image must be in the cache already.</summary>
    Never,
}

/// <summary>An image ready to be a sandbox root: its EROFS base and its config.</summary>
/// <param name="Reference">The canonical reference, <c>default</c>, or the absolute host path.</param>
/// <param name="BasePath">
/// The read-only EROFS image every sandbox of this image shares, the host folder, or the disk image.
/// </param>
/// <param name="Config">The image config; null for the built-in image and host paths.</param>
/// <param name="Disk">The disk image, checked, when the path is a file; null otherwise.</param>
internal sealed record SandboxImage(string Reference, string BasePath, ImageConfig? Config, DiskImage? Disk = null);

/// <summary>
/// A resolved image with the cache lock still held shared, so that no removal takes it before the
/// sandbox that uses it is recorded; disposing lets the lock go.
/// </summary>
internal sealed class HeldImage(SandboxImage image, CacheLock? hold) : IDisposable
{
    public SandboxImage Image { get; } = image;

    public void Dispose() => hold?.Dispose();
}

/// <summary>
/// Turns an image name into a sandbox base: the built-in image from the module's layer tar, an OCI
/// image from its registry through the layer cache. Each base is built once, named by the layer
/// tar's or the manifest's digest, so every sandbox of one image shares one file. Also lists, pulls
/// ahead of time, imports from files and removes the cached images (Get-, Save-, Import- and
/// Remove-SandboxImage).
/// </summary>
public sealed class ImageStore
{
    private readonly SandboxHome _home;
    private readonly GuestAssets _assets;
    private readonly StateStore _store;

    internal ImageStore(SandboxHome home, GuestAssets assets, StateStore store)
    {
        _home = home;
        _assets = assets;
        _store = store;
    }

    private string ImagesDirectory => Path.Join(_home.CacheDirectory, "images");

    /// <summary>
    /// The reference as the cache records it (<c>python</c> is <c>docker.io/library/python:latest</c>);
    /// text that is no reference comes back as it is, so it simply matches nothing.
    /// </summary>
    public static string CanonicalReference(string image)
    {
        ArgumentNullException.ThrowIfNull(image);
        return ImageReference.TryParse(image, out ImageReference? reference) ? reference.ToString() : image;
    }

    /// <summary>Every image pulled into the cache, by reference.</summary>
    public IReadOnlyList<SandboxImageInfo> List()
    {
        var cache = LayerCache.ForHome(_home);
        return [.. cache.ListReferences().Select(entry => Describe(cache, entry))];
    }

    /// <summary>
    /// Pulls an image into the cache and builds its EROFS base, so that New-Sandbox need not wait:
    /// under <see cref="PullPolicy.IfMissing"/> a cached image is left as it is, under
    /// <see cref="PullPolicy.Always"/> the registry is asked again. The reference is recorded only
    /// once the base is built: an image whose layers do not unpack is refused and what its pull
    /// added is taken back, as for a failed import. Layer progress is reported from the download
    /// tasks, several at once.
    /// </summary>
    public async Task<SandboxImageInfo> PullAsync(
        string image,
        PullPolicy policy,
        IProgress<LayerProgress>? layers,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        RejectBuiltIn(image);
        SandboxImage resolved = await ResolveAsync(image, policy, progress, layers, cancellationToken)
            .ConfigureAwait(false);
        var cache = LayerCache.ForHome(_home);
        CachedReference entry = cache.FindReference(resolved.Reference)
            ?? throw new SandboxException("ImageNotFound", SandboxErrorKind.NotFound,
                $"The image {resolved.Reference} was removed from the cache while it was pulled.",
                resolved.Reference);
        return Describe(cache, entry);
    }

    /// <summary>
    /// Imports an image from an OCI image layout (a folder, or a tar or gzip tar of one) or a
    /// docker save archive, without any network: every blob is copied into the cache verified
    /// against its digest, the host's platform is chosen as a pull chooses it, the EROFS base is
    /// built, and then the image is recorded under each of its references as a pull records it.
    /// <paramref name="reference"/> names the image (and chooses it when the export holds
    /// several); without it the export's own full names are used. On any failure nothing this
    /// import added stays: no reference, no blob that no other image needs, no base.
    /// </summary>
    public async Task<IReadOnlyList<SandboxImageInfo>> ImportAsync(
        string path,
        string? reference,
        IProgress<LayerProgress>? layers,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        var cache = LayerCache.ForHome(_home);
        using ImageArchive archive = ImageArchive.Open(full, cache.IncomingDirectory, cancellationToken);
        ArchiveImage image = OciLayout.Recognizes(archive)
            ? OciLayout.Read(archive, reference, ImagePlatform.Host)
            : DockerArchive.Recognizes(archive)
            ? DockerArchive.Read(archive, reference, ImagePlatform.Host)
            : throw LayoutErrors.Invalid(full,
                $"it holds neither an {OciLayout.MarkerFile} file nor a {DockerArchive.ManifestFile}");
        string digest = image.ManifestDigest;
        ImageReference? pinned = image.Names.Select(ImageReference.Parse)
            .FirstOrDefault(name => name.Digest is not null && name.Digest != digest);
        if (pinned is not null)
        {
            throw new SandboxException("InvalidImageReference", SandboxErrorKind.InvalidArgument,
                $"The reference {pinned} pins another digest than the image in '{full}', {digest}.", full);
        }

        string names = string.Join(", ", image.Names);
        progress?.Report(new(SandboxMessageLevel.Verbose, $"Importing {names} ({image.Platform}, "
            + $"{image.Manifest.Layers.Count} layer(s)) from '{full}'."));
        var added = new CacheAdditions
        {
            BuiltBase = File.Exists(BasePathOf(digest)) ? null : digest,
        };
        (IReadOnlyList<SandboxImageInfo> imported, _) = await AddToCacheAsync<IReadOnlyList<SandboxImageInfo>>(
            cache, added, progress, keep: false, async () =>
        {
            await image.StoreAsync(archive, cache, layers, added.Published, cancellationToken)
                .ConfigureAwait(false);
            await EnsureBaseAsync(cache, names, digest, image.Manifest, progress, cancellationToken)
                .ConfigureAwait(false);
            foreach (string name in image.Names)
            {
                if (cache.FindReference(name) is { } earlier && earlier.ManifestDigest != digest)
                {
                    progress?.Report(new(SandboxMessageLevel.Verbose,
                        $"{name} was {earlier.ManifestDigest}; it now names the imported image."));
                }

                await cache.SetReferenceAsync(new CachedReference
                {
                    Reference = name,
                    ManifestDigest = digest,
                    IndexDigest = image.IndexJson is null ? null : ContentDigest.Of(image.IndexJson),
                    Platform = image.Platform.ToString(),
                    PulledAt = DateTimeOffset.UtcNow,
                }, cancellationToken).ConfigureAwait(false);
                added.Recorded.Add(name);
            }

            return [.. image.Names.Select(name => Describe(cache, cache.FindReference(name)!))];
        }, cancellationToken).ConfigureAwait(false);
        return imported;
    }

    /// <summary>
    /// Removes an image from the cache: its reference record, its EROFS base and every blob that no
    /// other cached reference needs. Refused with <c>ImageInUse</c> while a sandbox was created from
    /// it, unless <paramref name="force"/>; such sandboxes rebuild their base on their next start,
    /// which pulls the image again. A running sandbox keeps its open base (Linux frees the file
    /// when the VM closes it).
    /// </summary>
    public void Remove(string image, bool force, IProgress<SandboxMessage>? progress)
    {
        RejectBuiltIn(image);
        string reference = CanonicalReference(image);
        var cache = LayerCache.ForHome(_home);

        // Alone in the cache before the checks: a pull in progress finishes first, so the checks see
        // what it recorded, and no pull is then between finding a blob cached and recording it. A
        // New-Sandbox holds the lock shared from its pull until its sandbox record is in
        // (ResolveAndHoldAsync), so the users listed below include it.
        using CacheLock alone = CacheLock.Take(cache, exclusive: true, progress);
        CachedReference entry = cache.FindReference(reference)
            ?? throw new SandboxException("ImageNotFound", SandboxErrorKind.NotFound,
                $"The image {reference} is not in the cache.", reference);
        List<string> users = [.. _store.List().Where(r => r.Image == reference).Select(r => r.Name)];
        if (users.Count > 0)
        {
            string names = string.Join(", ", users.Select(n => $"'{n}'"));
            if (!force)
            {
                throw new SandboxException("ImageInUse", SandboxErrorKind.InvalidOperation,
                    $"The image {reference} is used by the sandbox(es) {names}. "
                    + "Remove them first, or use -Force.", reference);
            }

            progress?.Report(new(SandboxMessageLevel.Warning, $"The image {reference} is used by {names}; " +
                "they rebuild its base on their next start, pulling the image again."));
        }

        // The record goes first, so that no listing shows an image whose blobs are going.
        HashSet<string> mine = BlobsOf(cache, entry);
        cache.RemoveReference(reference);
        List<CachedReference> others = [.. cache.ListReferences()];
        var kept = new HashSet<string>(
            others.SelectMany(other => BlobsOf(cache, other)), StringComparer.Ordinal);

        int removed = mine.Where(digest => !kept.Contains(digest)).Count(cache.RemoveBlob);
        progress?.Report(new(SandboxMessageLevel.Verbose, $"Removed {reference} and {removed} blob(s)."));
        if (others.TrueForAll(other => other.ManifestDigest != entry.ManifestDigest))
        {
            string basePath = BasePathOf(entry.ManifestDigest);
            if (File.Exists(basePath))
            {
                File.Delete(basePath);
                progress?.Report(new(SandboxMessageLevel.Verbose, $"Removed the EROFS base {basePath}."));
            }
        }
    }

    internal async Task<SandboxImage> ResolveAsync(
        string image,
        PullPolicy policy,
        IProgress<SandboxMessage>? progress,
        IProgress<LayerProgress>? layers,
        CancellationToken cancellationToken)
    {
        using HeldImage held = await ResolveAsync(image, policy, progress, layers, hold: false, cancellationToken)
            .ConfigureAwait(false);
        return held.Image;
    }

    /// <summary>
    /// Resolves an image as <see cref="ResolveAsync(string, PullPolicy, IProgress{SandboxMessage},
    /// IProgress{LayerProgress}, CancellationToken)"/> does, and keeps the cache lock held shared
    /// until the result is disposed: New-Sandbox holds it until its sandbox record is in, so an
    /// image removal either waits for the record (and refuses with ImageInUse) or came first.
    /// </summary>
    internal Task<HeldImage> ResolveAndHoldAsync(
        string image,
        PullPolicy policy,
        IProgress<SandboxMessage>? progress,
        IProgress<LayerProgress>? layers,
        CancellationToken cancellationToken) =>
        ResolveAsync(image, policy, progress, layers, hold: true, cancellationToken);

    private async Task<HeldImage> ResolveAsync(
        string image,
        PullPolicy policy,
        IProgress<SandboxMessage>? progress,
        IProgress<LayerProgress>? layers,
        bool hold,
        CancellationToken cancellationToken)
    {
        if (image == SandboxOptions.DefaultImage)
        {
            string path = await RootDisks.DefaultImageAsync(_home, _assets, progress, cancellationToken)
                .ConfigureAwait(false);
            return new HeldImage(new SandboxImage(image, path, null), null);
        }

        if (LooksLikePath(image))
        {
            // A host folder is the base itself, shared read-only over 9p; never written. A file is
            // a disk image, which each sandbox gets a copy or an overlay of; never written either.
            string path = Path.GetFullPath(image.StartsWith('~')
                ? Path.Join(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), image[1..])
                : image);
            if (File.Exists(path))
            {
                DiskImage disk = await DiskImage.InspectAsync(path, cancellationToken).ConfigureAwait(false);
                progress?.Report(new(SandboxMessageLevel.Verbose, $"'{path}' is a {disk.Format} disk image"
                    + (disk.Partition is int n ? $" with its root in partition {n}." : ".")));
                return new HeldImage(new SandboxImage(path, path, null, disk), null);
            }

            if (!Directory.Exists(path))
            {
                throw new SandboxException("ImagePathNotFound", SandboxErrorKind.NotFound,
                    $"There is no root folder or disk image at '{path}'.", image);
            }

            return new HeldImage(new SandboxImage(path, path, null), null);
        }

        ImageReference reference = ImageReference.Parse(image);
        var cache = LayerCache.ForHome(_home);
        var added = new CacheAdditions();
        (SandboxImage resolved, CacheLock? kept) = await AddToCacheAsync(cache, added, progress, hold, async () =>
        {
            PulledImage? pulled = policy == PullPolicy.Always
                ? null
                : await PulledImage.LoadAsync(cache, reference, cancellationToken).ConfigureAwait(false);
            if (pulled is null && policy == PullPolicy.Never)
            {
                throw new SandboxException("ImageNotFound", SandboxErrorKind.NotFound,
                    $"The image {reference} is not in the cache, and the pull policy is Never.", image);
            }

            bool fetched = pulled is null;
            if (pulled is null)
            {
                progress?.Report(new(SandboxMessageLevel.Verbose, $"Pulling {reference}."));
                using var client = new RegistryClient();
                var published = new List<string>();
                pulled = await client.FetchAsync(reference, cache, null, new PullProgress(progress, layers),
                    published, cancellationToken).ConfigureAwait(false);

                // A failed download keeps its verified layers for the next attempt; from here on a
                // failure refuses the image itself, and all it added goes.
                added.Published.AddRange(published);
                string digest = pulled.ManifestDigest;
                added.BuiltBase = File.Exists(BasePathOf(digest)) ? null : digest;
            }

            string basePath = await EnsureBaseAsync(cache, reference.ToString(), pulled.ManifestDigest,
                pulled.Manifest, progress, cancellationToken).ConfigureAwait(false);
            if (fetched)
            {
                // Recorded last, so that no listing and no -PullPolicy IfMissing finds an image whose
                // base cannot be built.
                await pulled.RecordAsync(cache, cancellationToken).ConfigureAwait(false);
            }

            return new SandboxImage(reference.ToString(), basePath, pulled.Config);
        }, cancellationToken).ConfigureAwait(false);
        return new HeldImage(resolved, kept);
    }

    // The image's EROFS base, built from its cached layers unless it exists.
    private async Task<string> EnsureBaseAsync(
        LayerCache cache,
        string reference,
        string manifestDigest,
        ImageManifest manifest,
        IProgress<SandboxMessage>? progress,
        CancellationToken cancellationToken)
    {
        SandboxHome.CreatePrivateDirectory(ImagesDirectory);
        string basePath = BasePathOf(manifestDigest);
        if (!File.Exists(basePath))
        {
            progress?.Report(new(SandboxMessageLevel.Verbose,
                $"Building the EROFS base of {reference} from {manifest.Layers.Count} layer(s)."));
            IReadOnlyList<string> diffIds = ImageConfig.Parse(
                File.ReadAllBytes(cache.BlobPath(manifest.Config.Digest)), reference).DiffIds;
            IReadOnlyList<string> dropped = await new ErofsImageBuilder()
                .WriteFromLayersAsync(OpenLayers(cache, manifest, diffIds), basePath, null, cancellationToken)
                .ConfigureAwait(false);
            foreach (string xattr in dropped)
            {
                progress?.Report(new(SandboxMessageLevel.Warning, $"Image {reference}: dropped {xattr}."));
            }
        }

        return basePath;
    }

    // Runs a pull or an import holding the cache shared. When it fails after adding something, the
    // additions are taken back holding the cache alone: taking blobs back is a removal, so it waits
    // for the pulls that might be using them. With keep, a success hands the shared lock to the
    // caller instead of letting it go.
    private async Task<(T Result, CacheLock? Held)> AddToCacheAsync<T>(
        LayerCache cache,
        CacheAdditions added,
        IProgress<SandboxMessage>? progress,
        bool keep,
        Func<Task<T>> work,
        CancellationToken cancellationToken)
    {
        CacheLock held = await CacheLock.TakeAsync(cache, exclusive: false, progress, cancellationToken)
            .ConfigureAwait(false);
        bool handedOver = false;
        try
        {
            T result = await work().ConfigureAwait(false);
            handedOver = keep;
            return (result, keep ? held : null);
        }
        catch when (added.Any)
        {
            held.Dispose();
            held = CacheLock.Take(cache, exclusive: true, progress);
            TakeBack(cache, added);
            throw;
        }
        finally
        {
            if (!handedOver)
            {
                held.Dispose();
            }
        }
    }

    // Undoes a failed pull or import, holding the cache alone: its records, the blobs it published
    // that no recorded image needs, and the base it built.
    private void TakeBack(LayerCache cache, CacheAdditions added)
    {
        added.Recorded.ForEach(name => cache.RemoveReference(name));
        List<CachedReference> others = [.. cache.ListReferences()];
        var kept = new HashSet<string>(
            others.SelectMany(other => BlobsOf(cache, other)), StringComparer.Ordinal);
        foreach (string digest in added.Published.Where(digest => !kept.Contains(digest)))
        {
            cache.RemoveBlob(digest);
        }

        if (added.BuiltBase is { } builtBase
            && others.TrueForAll(other => other.ManifestDigest != builtBase)
            && File.Exists(BasePathOf(builtBase)))
        {
            File.Delete(BasePathOf(builtBase));
        }
    }

    private static void RejectBuiltIn(string image)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image == SandboxOptions.DefaultImage)
        {
            throw new SandboxException("BuiltInImage", SandboxErrorKind.InvalidArgument,
                "The built-in image 'default' ships with the module; it is neither pulled nor removed.",
                image);
        }
    }

    private string BasePathOf(string manifestDigest) =>
        Path.Join(ImagesDirectory, ContentDigest.Hex(manifestDigest) + ".erofs");

    private SandboxImageInfo Describe(LayerCache cache, CachedReference entry)
    {
        ImageManifest? manifest = ReadManifest(cache, entry);
        ImageConfig? config = null;
        if (manifest is not null && cache.Contains(manifest.Config.Digest))
        {
            try
            {
                config = ImageConfig.Parse(File.ReadAllBytes(cache.BlobPath(manifest.Config.Digest)),
                    entry.Reference);
            }
            catch (Exception e) when (e is IOException or SandboxException)
            {
                // A config that cannot be read only leaves Created empty.
            }
        }

        string basePath = BasePathOf(entry.ManifestDigest);
        var baseFile = new FileInfo(basePath);
        return new SandboxImageInfo(
            entry.Reference,
            entry.ManifestDigest,
            entry.Platform,
            manifest?.Layers.Sum(layer => layer.Size) ?? 0,
            manifest?.Layers.Count ?? 0,
            config?.Created,
            entry.PulledAt,
            baseFile.Exists ? basePath : null,
            baseFile.Exists ? baseFile.Length : null);
    }

    // Everything the reference needs: its index, manifest, config and layers.
    private static HashSet<string> BlobsOf(LayerCache cache, CachedReference entry)
    {
        var blobs = new HashSet<string>(StringComparer.Ordinal) { entry.ManifestDigest };
        if (entry.IndexDigest is { } index)
        {
            blobs.Add(index);
        }

        if (ReadManifest(cache, entry) is { } manifest)
        {
            blobs.Add(manifest.Config.Digest);
            blobs.UnionWith(manifest.Layers.Select(layer => layer.Digest));
        }

        return blobs;
    }

    // Null when the manifest blob is gone or unreadable: the image then shows no layers, and a
    // removal takes only what the record itself names.
    private static ImageManifest? ReadManifest(LayerCache cache, CachedReference entry)
    {
        try
        {
            return cache.Contains(entry.ManifestDigest)
                ? ImageManifest.Parse(
                    File.ReadAllBytes(cache.BlobPath(entry.ManifestDigest)), entry.Reference)
                : null;
        }
        catch (Exception e) when (e is IOException or SandboxException)
        {
            return null;
        }
    }

    /// <summary>Whether an -Image value names a host path rather than an image reference.</summary>
    internal static bool LooksLikePath(string image) =>
        image.StartsWith('/') || image.StartsWith("./", StringComparison.Ordinal)
        || image.StartsWith("../", StringComparison.Ordinal) || image.StartsWith('~') || image is "." or "..";

    // One layer open at a time: each stream is disposed when the builder asks for the next. Each
    // is checked against its diff_id as it is read, where the config names one for every layer.
    private static IEnumerable<Stream> OpenLayers(
        LayerCache cache, ImageManifest manifest, IReadOnlyList<string> diffIds)
    {
        bool check = diffIds.Count == manifest.Layers.Count && diffIds.All(ContentDigest.IsValid);
        for (int i = 0; i < manifest.Layers.Count; i++)
        {
            OciDescriptor layer = manifest.Layers[i];
            Stream opened = LayerTar.Open(cache, layer.Digest, layer.MediaType);
            using Stream tar = check ? new DiffIdCheckStream(opened, diffIds[i], layer.Digest) : opened;
            yield return tar;
        }
    }

    // What one pull or import added to the cache, so that a failure can take it back.
    private sealed class CacheAdditions
    {
        // References recorded.
        public List<string> Recorded { get; } = [];

        // Blobs published, which were not cached before.
        public List<string> Published { get; } = [];

        // The manifest digest whose EROFS base this built, when there was none before.
        public string? BuiltBase { get; set; }

        public bool Any => Recorded.Count > 0 || Published.Count > 0 || BuiltBase is not null;
    }

    // Synchronous, unlike Progress<T>, whose posted callbacks could outlive the pull and report
    // into a cmdlet's message queue after it was closed.
    private sealed class PullProgress(IProgress<SandboxMessage>? messages, IProgress<LayerProgress>? layers)
        : IProgress<LayerProgress>
    {
        public void Report(LayerProgress value)
        {
            layers?.Report(value);
            if (value.BytesDone == value.BytesTotal)
            {
                messages?.Report(new(SandboxMessageLevel.Verbose,
                    $"Layer {value.Digest[..19]} ({value.BytesTotal} bytes) done."));
            }
        }
    }
}
