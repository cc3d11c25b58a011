using System.Net;
using System.Net.Http.Headers;
using Microsandbox.Engine.Images.Cache;

namespace Microsandbox.Engine.Images.Registry;

/// <summary>
/// A client of the OCI distribution API (<c>/v2/</c>): it resolves references to the manifest for a
/// platform, downloads blobs into the <see cref="LayerCache"/> verifying each against its digest
/// (in parallel, resuming interrupted downloads), and pushes blobs and manifests.
/// </summary>
/// <remarks>
/// Anonymous access, bearer tokens from the registry's token service and Basic auth are answered
/// as the registry challenges; credentials come from the Docker config file. Loopback registries
/// and those named in <see cref="RegistryClientOptions.InsecureRegistries"/> are spoken to over
/// plain HTTP, all others over HTTPS.
/// </remarks>
public sealed class RegistryClient : IDisposable
{
    private const long MaxManifestBytes = 4 << 20;
    private const long MaxConfigBytes = 32 << 20;
    private const int ProgressStep = 256 << 10;

    private readonly HttpClient _http;
    private readonly RegistryAuthenticator _auth;
    private readonly HashSet<string> _insecure;
    private readonly RegistryCredentials _credentials;

    /// <summary>Creates a client; it holds connections until disposed.</summary>
    public RegistryClient(RegistryClientOptions? options = null)
    {
        Options = options ?? new RegistryClientOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.MaxParallelDownloads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.DownloadAttempts, 1);
        HttpMessageHandler handler = Options.Handler ?? new SocketsHttpHandler
        {
            ConnectTimeout = Options.ConnectTimeout,

            // Blobs are verified as sent; a transparently decompressed body would never match.
            AutomaticDecompression = DecompressionMethods.None,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        };
        _http = new HttpClient(handler, disposeHandler: Options.Handler is null)
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("microsandbox",
            typeof(RegistryClient).Assembly.GetName().Version?.ToString(3) ?? "0"));
        _insecure = new HashSet<string>(Options.InsecureRegistries, StringComparer.OrdinalIgnoreCase);
        _credentials = Options.Credentials ?? RegistryCredentials.FromDockerConfig();
        _auth = new RegistryAuthenticator(_http, _credentials, MayCarrySecrets);
    }

    /// <summary>The options the client was made with.</summary>
    public RegistryClientOptions Options { get; }

    /// <summary>The root of a registry's API, such as <c>https://registry-1.docker.io</c>.</summary>
    public Uri BaseUri(string registry)
    {
        ArgumentException.ThrowIfNullOrEmpty(registry);
        string host = registry == ImageReference.DockerHub ? ImageReference.DockerHubApiHost : registry;
        return new Uri($"{(UsesPlainHttp(registry) ? "http" : "https")}://{host}/");
    }

    /// <summary>
    /// Checks that <paramref name="registry"/> speaks the distribution API (<c>GET /v2/</c>) and, when
    /// there are credentials for it, that it accepts them.
    /// </summary>
    public Task PingAsync(string registry, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(registry);
        return CallAsync(registry, registry, Options.RequestTimeout, async token =>
        {
            Uri uri = new(BaseUri(registry), "v2/");
            using HttpResponseMessage response = await SendAsync(registry, null, registry,
                    () => new HttpRequestMessage(HttpMethod.Get, uri), token,
                    answerChallenge: HasCredentials(registry))
                .ConfigureAwait(false);

            // Without credentials a 401 still proves a live registry: access is settled per repository.
            if (response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.Unauthorized)
            {
                return true;
            }

            throw RegistryErrors.Unexpected(registry, registry, response.StatusCode,
                " at /v2/: it is not an OCI distribution registry.");
        }, cancellationToken);
    }

    /// <summary>
    /// Fetches the manifest or index a reference names, checking it against the reference's digest
    /// or the digest the registry announces.
    /// </summary>
    public Task<ManifestDocument> GetManifestAsync(
        ImageReference reference, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        return GetManifestAsync(reference, reference.ToString(), cancellationToken);
    }

    /// <summary>
    /// Resolves a reference to the image manifest for <paramref name="platform"/>, choosing from an
    /// index when the reference names one; <c>ImagePlatformNotFound</c> when it has no such entry.
    /// </summary>
    public async Task<ResolvedImage> ResolveAsync(
        ImageReference reference, ImagePlatform platform, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(platform);
        string target = reference.ToString();
        ManifestDocument document = await GetManifestAsync(reference, target, cancellationToken)
            .ConfigureAwait(false);
        ManifestDocument? index = null;
        if (document.IsIndex)
        {
            index = document;
            OciDescriptor entry = ImageIndex.Parse(document.Content.Span, target).Select(platform, target);
            document = await GetManifestAsync(reference.WithDigest(entry.Digest), target, cancellationToken)
                .ConfigureAwait(false);
            if (document.IsIndex)
            {
                throw RegistryErrors.Unsupported(target, "its index points at another index");
            }
        }

        return new ResolvedImage
        {
            Reference = reference,
            Platform = platform,
            Index = index,
            ManifestDocument = document,
            Manifest = ImageManifest.Parse(document.Content.Span, target),
        };
    }

    /// <summary>Fetches a small blob (a config) into memory, verified against its descriptor.</summary>
    public Task<byte[]> GetBlobAsync(
        ImageReference image, OciDescriptor blob, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(blob);
        string target = image.ToString();
        ContentDigest.Validate(blob.Digest);
        if (blob.Size > MaxConfigBytes)
        {
            throw RegistryErrors.TooLarge(target, "config", MaxConfigBytes);
        }

        return CallAsync(image.Registry, target, Options.RequestTimeout, async token =>
        {
            using HttpResponseMessage response = await SendAsync(image.Registry, PullScope(image), target,
                () => new HttpRequestMessage(HttpMethod.Get, Endpoint(image, "blobs/" + blob.Digest)), token)
                .ConfigureAwait(false);
            await EnsureBlobResponseAsync(response, image, blob.Digest, target, token).ConfigureAwait(false);
            byte[] content = await ReadLimitedAsync(response.Content, blob.Size,
                    () => ContentDigest.Mismatch(blob.Digest, "(unknown: more than the announced size)",
                        blob.Size + 1, target),
                    token)
                .ConfigureAwait(false);
            string actual = ContentDigest.Of(content);
            if (actual != blob.Digest || content.Length != blob.Size)
            {
                throw ContentDigest.Mismatch(blob.Digest, actual, content.Length, target);
            }

            return content;
        }, cancellationToken);
    }

    /// <summary>
    /// Downloads a blob into the cache, verified while it streams. A partial download left by an
    /// interruption is continued with a Range request (started over when the server ignores it);
    /// the download itself is resumed up to <see cref="RegistryClientOptions.DownloadAttempts"/> times.
    /// When another process is downloading the same blob this waits for it instead. Returns whether
    /// this call published the blob, false when it was cached already (or another process put it).
    /// </summary>
    public async Task<bool> DownloadBlobAsync(
        ImageReference image,
        OciDescriptor blob,
        LayerCache cache,
        IProgress<LayerProgress>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentNullException.ThrowIfNull(blob);
        ArgumentNullException.ThrowIfNull(cache);
        string target = image.ToString();
        ContentDigest.Validate(blob.Digest);
        BlobDownload? download = await cache.BeginDownloadAsync(blob.Digest, blob.Size, cancellationToken)
            .ConfigureAwait(false);
        if (download is null)
        {
            progress?.Report(new LayerProgress(blob.Digest, blob.Size, blob.Size));
            return false;
        }

        await using (download.ConfigureAwait(false))
        {
            progress?.Report(new LayerProgress(blob.Digest, download.Length, blob.Size));
            int interruptions = 0;
            bool restarted = false;
            while (true)
            {
                Exception? interruption = await FetchRemainderAsync(image, blob, download, progress, target,
                    cancellationToken).ConfigureAwait(false);
                if (interruption is not null)
                {
                    if (++interruptions >= Options.DownloadAttempts)
                    {
                        throw Interrupted(blob, download.Length, target, interruption);
                    }

                    continue;
                }

                // Bytes kept from an earlier attempt may be what spoiled the digest (a server that
                // changed the blob, a foreign file): one clean restart before calling it a mismatch.
                if (!download.IsComplete() && download.ResumedFrom > 0 && !restarted)
                {
                    download.Restart();
                    restarted = true;
                    continue;
                }

                break;
            }

            await download.CommitAsync(cancellationToken).ConfigureAwait(false);
            return true;
        }
    }

    /// <summary>
    /// Pulls an image into the cache: <see cref="FetchAsync"/>, then records the reference. A failure
    /// records nothing: only layers that were complete and verified stay cached, for the next attempt.
    /// </summary>
    public async Task<PulledImage> PullAsync(
        ImageReference reference,
        LayerCache cache,
        ImagePlatform? platform,
        IProgress<LayerProgress>? progress,
        CancellationToken cancellationToken)
    {
        PulledImage image = await FetchAsync(reference, cache, platform, progress, null, cancellationToken)
            .ConfigureAwait(false);
        await image.RecordAsync(cache, cancellationToken).ConfigureAwait(false);
        return image;
    }

    /// <summary>
    /// Fetches an image into the cache without recording its reference: resolves the platform's
    /// manifest, fetches the config, downloads the layers
    /// (<see cref="RegistryClientOptions.MaxParallelDownloads"/> at a time), then stores the config,
    /// manifest and index. Each digest this call publishes is added to <paramref name="published"/>,
    /// so that a caller who then refuses the image (its layers do not unpack) can take back what
    /// the pull added. Progress is reported from the download tasks, several at once.
    /// </summary>
    public async Task<PulledImage> FetchAsync(
        ImageReference reference,
        LayerCache cache,
        ImagePlatform? platform,
        IProgress<LayerProgress>? progress,
        ICollection<string>? published,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentNullException.ThrowIfNull(cache);
        platform ??= Options.Platform ?? ImagePlatform.Host;
        string target = reference.ToString();
        ResolvedImage resolved = await ResolveAsync(reference, platform, cancellationToken)
            .ConfigureAwait(false);
        ImageManifest manifest = resolved.Manifest;
        manifest.EnsureUnpackable(target);

        byte[] configJson = cache.Contains(manifest.Config.Digest)
            ? await cache.ReadBlobAsync(manifest.Config.Digest, cancellationToken).ConfigureAwait(false)
            : await GetBlobAsync(reference, manifest.Config, cancellationToken).ConfigureAwait(false);
        ImageConfig config = ImageConfig.Parse(configJson, target);
        platform.EnsureRuns(config, target);

        void Published(string digest)
        {
            if (published is not null)
            {
                lock (published)
                {
                    published.Add(digest);
                }
            }
        }

        var parallel = new ParallelOptions
        {
            MaxDegreeOfParallelism = Options.MaxParallelDownloads,
            CancellationToken = cancellationToken,
        };
        await Parallel.ForEachAsync(manifest.Layers.DistinctBy(layer => layer.Digest), parallel,
            async (layer, token) =>
            {
                if (await DownloadBlobAsync(reference, layer, cache, progress, token).ConfigureAwait(false))
                {
                    Published(layer.Digest);
                }
            }).ConfigureAwait(false);

        ManifestDocument document = resolved.ManifestDocument;
        var documents = new List<(string Digest, ReadOnlyMemory<byte> Content)>
        {
            (manifest.Config.Digest, configJson),
            (document.Digest, document.Content),
        };
        if (resolved.Index is { } index)
        {
            documents.Add((index.Digest, index.Content));
        }

        foreach ((string digest, ReadOnlyMemory<byte> content) in documents)
        {
            if (!cache.Contains(digest))
            {
                await cache.PutAsync(digest, content, cancellationToken).ConfigureAwait(false);
                Published(digest);
            }
        }

        return new PulledImage
        {
            Reference = reference,
            ManifestDigest = document.Digest,
            IndexDigest = resolved.Index?.Digest,
            Platform = platform,
            Manifest = manifest,
            Config = config,
        };
    }

    /// <summary>Pushes a blob held in memory; returns its digest.</summary>
    public async Task<string> PushBlobAsync(
        ImageReference repository, ReadOnlyMemory<byte> content, CancellationToken cancellationToken)
    {
        string digest = ContentDigest.Of(content.Span);
        using var stream = new MemoryStream(content.ToArray(), writable: false);
        await PushBlobAsync(repository, digest, stream, cancellationToken).ConfigureAwait(false);
        return digest;
    }

    /// <summary>
    /// Pushes a blob from a seekable stream (from its current position to its end) to a repository,
    /// monolithically: <c>POST</c> to open an upload, <c>PUT</c> with the digest to finish it. A blob
    /// the repository already has is not sent again.
    /// </summary>
    public Task PushBlobAsync(
        ImageReference repository, string digest, Stream content, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(repository);
        ArgumentNullException.ThrowIfNull(content);
        if (!content.CanSeek)
        {
            throw new ArgumentException("A blob to push must be a seekable stream.", nameof(content));
        }

        ContentDigest.Validate(digest);
        string target = repository.ToString();
        string registry = repository.Registry;
        string scope = PushScope(repository);
        long start = content.Position;
        return CallAsync(registry, target, null, async token =>
        {
            using (HttpResponseMessage head = await SendAsync(registry, scope, target,
                () => new HttpRequestMessage(HttpMethod.Head, Endpoint(repository, "blobs/" + digest)), token)
                .ConfigureAwait(false))
            {
                if (head.StatusCode == HttpStatusCode.OK)
                {
                    return true;
                }
            }

            Uri upload;
            using (HttpResponseMessage start = await SendAsync(registry, scope, target,
                () => new HttpRequestMessage(HttpMethod.Post, Endpoint(repository, "blobs/uploads/")), token)
                .ConfigureAwait(false))
            {
                await EnsureSuccessAsync(start, registry, target, token).ConfigureAwait(false);
                if (start.Headers.Location is null)
                {
                    throw RegistryErrors.Unexpected(registry, target, start.StatusCode,
                        ": the upload was opened without a Location to send it to.");
                }

                upload = WithQuery(new Uri(BaseUri(registry), start.Headers.Location),
                    "digest=" + Uri.EscapeDataString(digest));
            }

            // Made anew for a repeated request: sending disposes the request and its content.
            using HttpResponseMessage done = await SendAsync(registry, scope, target, () =>
            {
                content.Position = start;
                return new HttpRequestMessage(HttpMethod.Put, upload) { Content = new BlobContent(content) };
            }, token).ConfigureAwait(false);
            await EnsureSuccessAsync(done, registry, target, token).ConfigureAwait(false);
            return true;
        }, cancellationToken);
    }

    /// <summary>
    /// Pushes a manifest or index under the reference's tag (or digest); returns its digest. Every
    /// blob and manifest it refers to must be in the repository already.
    /// </summary>
    public Task<string> PushManifestAsync(
        ImageReference reference,
        string mediaType,
        ReadOnlyMemory<byte> manifest,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reference);
        ArgumentException.ThrowIfNullOrEmpty(mediaType);
        string target = reference.ToString();
        string digest = ContentDigest.Of(manifest.Span);
        if (reference.Digest is not null && reference.Digest != digest)
        {
            throw ContentDigest.Mismatch(reference.Digest, digest, manifest.Length, target);
        }

        byte[] content = manifest.ToArray();
        return CallAsync(reference.Registry, target, Options.RequestTimeout, async token =>
        {
            Uri uri = Endpoint(reference, "manifests/" + reference.ManifestReference);
            using HttpResponseMessage response = await SendAsync(reference.Registry, PushScope(reference),
                target, () =>
                {
                    var body = new ByteArrayContent(content);
                    body.Headers.ContentType = new MediaTypeHeaderValue(mediaType);
                    return new HttpRequestMessage(HttpMethod.Put, uri) { Content = body };
                }, token).ConfigureAwait(false);
            await EnsureSuccessAsync(response, reference.Registry, target, token).ConfigureAwait(false);
            string? announced = AnnouncedDigest(response);
            if (announced is not null && announced != digest)
            {
                throw ContentDigest.Mismatch(digest, announced, manifest.Length, target);
            }

            return digest;
        }, cancellationToken);
    }

    /// <summary>Closes the client's connections.</summary>
    public void Dispose() => _http.Dispose();

    private Task<ManifestDocument> GetManifestAsync(
        ImageReference reference, string target, CancellationToken cancellationToken) =>
        CallAsync(reference.Registry, target, Options.RequestTimeout, async token =>
        {
            Uri uri = Endpoint(reference, "manifests/" + reference.ManifestReference);
            using HttpResponseMessage response = await SendAsync(reference.Registry, PullScope(reference),
                target, () =>
                {
                    var request = new HttpRequestMessage(HttpMethod.Get, uri);
                    foreach (string type in ImageMediaTypes.AcceptedManifests)
                    {
                        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue(type));
                    }

                    return request;
                }, token).ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                string detail = await RegistryErrors.ReadErrorDetailAsync(response, token)
                    .ConfigureAwait(false);
                throw RegistryErrors.ImageNotFound(target, $"the registry has no manifest "
                    + $"{reference.ManifestReference} in {reference.Repository}{detail}.");
            }

            await EnsureSuccessAsync(response, reference.Registry, target, token).ConfigureAwait(false);
            byte[] content = await ReadLimitedAsync(response.Content, MaxManifestBytes,
                    () => RegistryErrors.TooLarge(target, "manifest", MaxManifestBytes), token)
                .ConfigureAwait(false);
            string digest = ContentDigest.Of(content);
            string? expected = reference.Digest ?? AnnouncedDigest(response);
            if (expected is not null && expected != digest)
            {
                throw ContentDigest.Mismatch(expected, digest, content.Length, target);
            }

            string? mediaType = ManifestJson.DetectMediaType(content,
                response.Content.Headers.ContentType?.MediaType);
            if (!ImageMediaTypes.IsIndex(mediaType) && !ImageMediaTypes.IsManifest(mediaType))
            {
                throw RegistryErrors.Unsupported(target, $"its manifest is of type '{mediaType ?? "unknown"}'; only OCI and "
                    + "Docker schema 2 manifests and indexes are supported");
            }

            return new ManifestDocument { Content = content, MediaType = mediaType!, Digest = digest };
        }, cancellationToken);

    /// <summary>
    /// Requests the rest of a blob. Returns null when the body ended normally (complete or not: the
    /// digest check decides), or the failure that broke it off, which a new attempt resumes from.
    /// </summary>
    private async Task<Exception?> FetchRemainderAsync(
        ImageReference image,
        OciDescriptor blob,
        BlobDownload download,
        IProgress<LayerProgress>? progress,
        string target,
        CancellationToken cancellationToken)
    {
        long offset = download.Length;
        if (offset >= blob.Size)
        {
            return null;
        }

        HttpResponseMessage response = await CallAsync(image.Registry, target, Options.RequestTimeout,
            token => SendAsync(image.Registry, PullScope(image), target, () =>
            {
                var request = new HttpRequestMessage(HttpMethod.Get, Endpoint(image, "blobs/" + blob.Digest));
                if (offset > 0)
                {
                    request.Headers.Range = new RangeHeaderValue(offset, null);
                }

                return request;
            }, token), cancellationToken).ConfigureAwait(false);
        using (response)
        {
            switch (response.StatusCode)
            {
                case HttpStatusCode.PartialContent when response.Content.Headers.ContentRange?.From == offset:
                    break;
                case HttpStatusCode.PartialContent:
                case HttpStatusCode.RequestedRangeNotSatisfiable:
                    download.Restart();
                    return new IOException($"The registry answered a range request for {blob.Digest} with "
                        + $"{(int)response.StatusCode} and another range.");
                case HttpStatusCode.OK:
                    // The server ignored the Range header and sends the whole blob.
                    if (offset > 0)
                    {
                        download.Restart();
                    }

                    break;
                default:
                    await EnsureBlobResponseAsync(response, image, blob.Digest, target, cancellationToken)
                        .ConfigureAwait(false);
                    break;
            }

            return await ReceiveAsync(response, blob, download, progress, cancellationToken)
                .ConfigureAwait(false);
        }
    }

    private async Task<Exception?> ReceiveAsync(
        HttpResponseMessage response,
        OciDescriptor blob,
        BlobDownload download,
        IProgress<LayerProgress>? progress,
        CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[1 << 17];
        long reported = download.Length;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        try
        {
            Stream body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (body.ConfigureAwait(false))
            {
                while (true)
                {
                    idle.CancelAfter(Options.ReadIdleTimeout);
                    int read = await body.ReadAsync(buffer, idle.Token).ConfigureAwait(false);
                    if (read == 0)
                    {
                        break;
                    }

                    await download.WriteAsync(buffer.AsMemory(0, read), cancellationToken)
                        .ConfigureAwait(false);
                    if (download.Length - reported >= ProgressStep || download.Length == blob.Size)
                    {
                        reported = download.Length;
                        progress?.Report(new LayerProgress(blob.Digest, reported, blob.Size));
                    }
                }
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            return e;
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            return new TimeoutException(
                $"Nothing arrived for {Options.ReadIdleTimeout.TotalSeconds:0} s.", e);
        }

        if (reported != download.Length)
        {
            progress?.Report(new LayerProgress(blob.Digest, download.Length, blob.Size));
        }

        return null;
    }

    /// <summary>
    /// Sends a request made by <paramref name="create"/>, answering a 401's challenge once and sending
    /// it again; a second 401 fails with <c>RegistryAuthFailed</c>.
    /// </summary>
    private async Task<HttpResponseMessage> SendAsync(
        string registry,
        string? scope,
        string target,
        Func<HttpRequestMessage> create,
        CancellationToken cancellationToken,
        bool answerChallenge = true)
    {
        using (HttpRequestMessage request = create())
        {
            await _auth.AuthorizeAsync(request, registry, scope, target, cancellationToken)
                .ConfigureAwait(false);
            HttpResponseMessage response = await _http
                .SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken)
                .ConfigureAwait(false);
            if (response.StatusCode != HttpStatusCode.Unauthorized || !answerChallenge)
            {
                return response;
            }

            AuthChallenge? challenge = AuthChallenge.From(response);
            response.Dispose();
            await _auth.AnswerAsync(challenge, registry, scope, target, cancellationToken)
                .ConfigureAwait(false);
        }

        using (HttpRequestMessage retry = create())
        {
            await _auth.AuthorizeAsync(retry, registry, scope, target, cancellationToken)
                .ConfigureAwait(false);
            HttpResponseMessage response = await _http
                .SendAsync(retry, HttpCompletionOption.ResponseHeadersRead, cancellationToken)
                .ConfigureAwait(false);
            if (response.StatusCode == HttpStatusCode.Unauthorized)
            {
                response.Dispose();
                throw _auth.Refused(registry, target);
            }

            return response;
        }
    }

    /// <summary>
    /// Runs one registry operation under an optional overall deadline, turning transport failures
    /// into <c>RegistryUnreachable</c>; the caller's own cancellation passes through untouched.
    /// </summary>
    private static async Task<T> CallAsync<T>(
        string registry,
        string target,
        TimeSpan? timeout,
        Func<CancellationToken, Task<T>> operation,
        CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout is { } limit)
        {
            deadline.CancelAfter(limit);
        }

        try
        {
            return await operation(deadline.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is HttpRequestException or IOException)
        {
            throw RegistryErrors.Unreachable(registry, target, e);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw RegistryErrors.TimedOut(registry, target, e);
        }
    }

    private async Task EnsureSuccessAsync(
        HttpResponseMessage response, string registry, string target, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        if (response.StatusCode == HttpStatusCode.Forbidden)
        {
            throw _auth.Refused(registry, target);
        }

        string detail = await RegistryErrors.ReadErrorDetailAsync(response, cancellationToken)
            .ConfigureAwait(false);
        throw RegistryErrors.Unexpected(registry, target, response.StatusCode, detail);
    }

    private async Task EnsureBlobResponseAsync(
        HttpResponseMessage response, ImageReference image, string digest, string target,
        CancellationToken cancellationToken)
    {
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            throw RegistryErrors.BlobNotFound(target, digest);
        }

        await EnsureSuccessAsync(response, image.Registry, target, cancellationToken).ConfigureAwait(false);
    }

    private static async Task<byte[]> ReadLimitedAsync(
        HttpContent content, long limit, Func<Exception> tooLarge, CancellationToken cancellationToken)
    {
        if (content.Headers.ContentLength > limit)
        {
            throw tooLarge();
        }

        Stream stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            using var held = new MemoryStream();
            byte[] buffer = new byte[81920];
            int read;
            while ((read = await stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                if (held.Length + read > limit)
                {
                    throw tooLarge();
                }

                held.Write(buffer, 0, read);
            }

            return held.ToArray();
        }
    }

    private static string? AnnouncedDigest(HttpResponseMessage response) =>
        response.Headers.TryGetValues("Docker-Content-Digest", out var values)
        && values.FirstOrDefault() is { } digest && ContentDigest.IsValid(digest)
            ? digest : null;

    private Uri Endpoint(ImageReference image, string path) =>
        new(BaseUri(image.Registry), $"v2/{image.Repository}/{path}");

    private static string PullScope(ImageReference image) => $"repository:{image.Repository}:pull";

    private static string PushScope(ImageReference image) => $"repository:{image.Repository}:pull,push";

    private static Uri WithQuery(Uri uri, string parameter)
    {
        var builder = new UriBuilder(uri);
        builder.Query = builder.Query.Length > 1 ? builder.Query[1..] + "&" + parameter : parameter;
        return builder.Uri;
    }

    private bool HasCredentials(string registry) => _credentials.Find(registry) is not null;

    private bool UsesPlainHttp(string registry) =>
        IsLoopback(registry) || _insecure.Contains(registry) || _insecure.Contains(HostOf(registry));

    private bool MayCarrySecrets(Uri uri) =>
        uri.Scheme == Uri.UriSchemeHttps || IsLoopback(uri.Authority) || _insecure.Contains(uri.Authority)
        || _insecure.Contains(uri.Host);

    /// <summary>Whether a <c>host[:port]</c> is this machine: <c>localhost</c>, 127.0.0.0/8 or ::1.</summary>
    internal static bool IsLoopback(string hostAndPort)
    {
        string host = HostOf(hostAndPort);
        return host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
            || (IPAddress.TryParse(host, out IPAddress? address) && IPAddress.IsLoopback(address));
    }

    private static string HostOf(string hostAndPort)
    {
        if (hostAndPort.StartsWith('['))
        {
            int close = hostAndPort.IndexOf(']', StringComparison.Ordinal);
            return close > 0 ? hostAndPort[1..close] : hostAndPort;
        }

        int colon = hostAndPort.LastIndexOf(':');
        return colon > 0 && hostAndPort.IndexOf(':', StringComparison.Ordinal) == colon
            ? hostAndPort[..colon] : hostAndPort;
    }

    private static SandboxException Interrupted(
        OciDescriptor blob, long held, string target, Exception last) =>
        new("BlobDownloadInterrupted", SandboxErrorKind.ResourceUnavailable,
            $"The download of {blob.Digest} for {target} kept breaking off ({last.Message}); the {held} of "
            + $"{blob.Size} bytes received are kept and the next pull resumes from there.", target, last);
}
