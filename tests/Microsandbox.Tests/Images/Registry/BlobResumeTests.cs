using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>
/// Download behaviour the real registry cannot be made to show: a server that ignores Range,
/// connections that break off mid-blob, and how many blobs are fetched at once. A small loopback
/// HTTP server plays the registry's blob endpoint (and, for a whole pull, its manifest endpoint),
/// and misbehaves as each test asks.
/// </summary>
public sealed class BlobResumeTests : IDisposable
{
    private readonly TempFolder _temp = new();
    private readonly byte[] _blob = RandomNumberGenerator.GetBytes(600 << 10);
    private readonly BlobServer _server;

    public BlobResumeTests() => _server = new BlobServer(_blob);

    public void Dispose()
    {
        _server.Dispose();
        _temp.Dispose();
    }

    private OciDescriptor Descriptor => new()
    {
        MediaType = ImageMediaTypes.OciLayerGzip,
        Digest = ContentDigest.Of(_blob),
        Size = _blob.Length,
    };

    private ImageReference Image => ImageReference.Parse($"127.0.0.1:{_server.Port}/test/blob:1");

    [Fact]
    public async Task A_server_that_ignores_Range_makes_the_download_start_over()
    {
        _server.Mode = ServerMode.IgnoreRange;
        LayerCache cache = _temp.NewCache();
        string partial = SeedPartial(cache, _blob.Length / 2);
        using var client = ClientFactory.Anonymous();

        await client.DownloadBlobAsync(Image, Descriptor, cache, null, Timing.Limit());

        Assert.Equal([$"bytes={_blob.Length / 2}-"], _server.Ranges);
        Assert.Equal(_blob, File.ReadAllBytes(cache.BlobPath(Descriptor.Digest)));
        Assert.False(File.Exists(partial));
    }

    [Fact]
    public async Task A_connection_broken_mid_blob_is_resumed_from_where_it_stopped()
    {
        _server.Mode = ServerMode.BreakFirst;
        LayerCache cache = _temp.NewCache();
        var progress = new ProgressLog();
        using var client = ClientFactory.Anonymous();

        await client.DownloadBlobAsync(Image, Descriptor, cache, progress, Timing.Limit());

        Assert.Equal(2, _server.Ranges.Count);
        Assert.Equal("", _server.Ranges.First());
        Assert.StartsWith("bytes=", _server.Ranges.Last(), StringComparison.Ordinal);
        Assert.NotEqual("bytes=0-", _server.Ranges.Last());
        Assert.Equal(_blob, File.ReadAllBytes(cache.BlobPath(Descriptor.Digest)));
        Assert.Equal(_blob.Length, progress.Last(Descriptor.Digest)!.BytesDone);
    }

    [Fact]
    public async Task A_download_that_keeps_breaking_fails_keeping_its_bytes_for_the_next_pull()
    {
        _server.Mode = ServerMode.BreakAlways;
        LayerCache cache = _temp.NewCache();
        string partial = Path.Join(cache.IncomingDirectory, $"sha256-{Descriptor.Digest[7..]}.partial");
        using (var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.None,
            DownloadAttempts = 2,
        }))
        {
            var error = await Assert.ThrowsAsync<SandboxException>(() =>
                client.DownloadBlobAsync(Image, Descriptor, cache, null, Timing.Limit()));

            Assert.Equal("BlobDownloadInterrupted", error.ErrorId);
            Assert.Equal(SandboxErrorKind.ResourceUnavailable, error.Kind);
        }

        Assert.False(cache.Contains(Descriptor.Digest));
        long kept = new FileInfo(partial).Length;
        Assert.InRange(kept, 1, _blob.Length - 1);

        // A later pull, as from another session, continues from the kept bytes.
        _server.Mode = ServerMode.Honest;
        _server.Ranges.Clear();
        using var later = ClientFactory.Anonymous();
        await later.DownloadBlobAsync(Image, Descriptor, new LayerCache(cache.Root), null, Timing.Limit());

        Assert.Equal([$"bytes={kept}-"], _server.Ranges);
        Assert.Equal(_blob, File.ReadAllBytes(cache.BlobPath(Descriptor.Digest)));
        Assert.False(File.Exists(partial));
    }

    [Fact]
    public async Task The_layers_of_an_image_download_several_at_once()
    {
        TestImage image = TestImage.Create(layers: 3, bytesPerLayer: 256 << 10);
        _server.Serve(image);
        _server.Mode = ServerMode.Slow;
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        await client.PullAsync(Image, cache, null, null, Timing.Limit());

        Assert.InRange(_server.MostAtOnce, 2, new RegistryClientOptions().MaxParallelDownloads);
        Assert.All(image.Layers,
            layer => Assert.Equal(layer.Blob, File.ReadAllBytes(cache.BlobPath(layer.Digest))));
    }

    [Fact]
    public async Task Cancellation_stops_the_download_and_keeps_the_partial()
    {
        _server.Mode = ServerMode.Stall;
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();
        using var cancel = new CancellationTokenSource();
        var progress = new ProgressLog();
        Task download = client.DownloadBlobAsync(Image, Descriptor, cache, progress, cancel.Token);
        await _server.Stalled.Task.WaitAsync(TimeSpan.FromSeconds(30));

        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => download);
        Assert.False(cache.Contains(Descriptor.Digest));
        string partial = Path.Join(cache.IncomingDirectory, $"sha256-{Descriptor.Digest[7..]}.partial");
        Assert.True(File.Exists(partial));
    }

    private string SeedPartial(LayerCache cache, int length)
    {
        string partial = Path.Join(cache.IncomingDirectory, $"sha256-{Descriptor.Digest[7..]}.partial");
        File.WriteAllBytes(partial, _blob[..length]);
        return partial;
    }

    internal enum ServerMode
    {
        Honest,
        IgnoreRange,
        BreakFirst,
        BreakAlways,
        Stall,

        /// <summary>Sends every answer in small pieces with pauses, so downloads overlap.</summary>
        Slow,
    }

    /// <summary>
    /// Serves one blob at any path, honouring Range unless told not to, or the documents of an
    /// image at their own paths; counts how many requests it answers at once.
    /// </summary>
    private sealed class BlobServer : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly byte[] _blob;
        private readonly Task _serving;
        private readonly ConcurrentDictionary<string, (byte[] Content, string? MediaType)> _paths =
            new(StringComparer.Ordinal);
        private readonly object _counting = new();
        private int _requests;
        private int _answering;

        public BlobServer(byte[] blob)
        {
            _blob = blob;
            Port = RegistryServer.FreePort();
            _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
            _listener.Start();
            _serving = Task.Run(ServeAsync);
        }

        public int Port { get; }

        public ServerMode Mode { get; set; }

        /// <summary>The Range header of each blob request, "" where there was none.</summary>
        public ConcurrentQueue<string> Ranges { get; } = new();

        public TaskCompletionSource Stalled { get; } =
            new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The most requests that were being answered at the same time.</summary>
        public int MostAtOnce { get; private set; }

        /// <summary>Serves an image's manifest under any tag, and its config and layers.</summary>
        public void Serve(TestImage image)
        {
            _paths["manifests"] = (image.ManifestJson, image.ManifestMediaType);
            _paths[image.ConfigDigest] = (image.Config, null);
            foreach (TestLayer layer in image.Layers)
            {
                _paths[layer.Digest] = (layer.Blob, null);
            }
        }

        public void Dispose()
        {
            // Close alone: after Stop, the managed HttpListener's Close looks its port up again
            // and binds it anew, which fails when another test has taken that port meanwhile.
            _listener.Close();
            try
            {
                _serving.Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException)
            {
                // The loop ends by its listener failing; that is how it stops.
            }
        }

        private async Task ServeAsync()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext context;
                try
                {
                    context = await _listener.GetContextAsync();
                }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException
                    or InvalidOperationException)
                {
                    return;
                }

                _ = Task.Run(() => AnswerAsync(context));
            }
        }

        private async Task AnswerAsync(HttpListenerContext context)
        {
            lock (_counting)
            {
                MostAtOnce = Math.Max(MostAtOnce, ++_answering);
            }

            try
            {
                await AnswerOneAsync(context);
            }
            finally
            {
                lock (_counting)
                {
                    _answering--;
                }
            }
        }

        private async Task AnswerOneAsync(HttpListenerContext context)
        {
            HttpListenerResponse response = context.Response;
            try
            {
                string[] segments = context.Request.Url!.AbsolutePath.Split('/');
                string key = segments.Length >= 2 && segments[^2] == "manifests"
                    ? "manifests"
                    : segments[^1];
                (byte[] content, string? mediaType) = _paths.TryGetValue(key, out var document)
                    ? document
                    : (_blob, null);
                if (mediaType is not null)
                {
                    response.ContentType = mediaType;
                }

                string range = context.Request.Headers["Range"] ?? "";
                Ranges.Enqueue(range);
                int number = Interlocked.Increment(ref _requests);
                bool ranged = range.StartsWith("bytes=", StringComparison.Ordinal);
                long from = Mode != ServerMode.IgnoreRange && ranged
                    ? long.Parse(range["bytes=".Length..].TrimEnd('-'), CultureInfo.InvariantCulture)
                    : 0;
                if (from > 0)
                {
                    response.StatusCode = 206;
                    response.Headers["Content-Range"] =
                        $"bytes {from}-{content.Length - 1}/{content.Length}";
                }

                response.ContentLength64 = content.Length - from;
                bool breakOff = Mode == ServerMode.BreakAlways
                    || (Mode == ServerMode.BreakFirst && number == 1);
                if (breakOff || Mode == ServerMode.Stall)
                {
                    int part = (int)Math.Min(64 << 10, content.Length - from);
                    await response.OutputStream.WriteAsync(content.AsMemory((int)from, part));
                    await response.OutputStream.FlushAsync();
                    if (Mode == ServerMode.Stall)
                    {
                        Stalled.TrySetResult();
                        await Task.Delay(TimeSpan.FromSeconds(20));
                    }

                    response.Abort();
                    return;
                }

                if (Mode == ServerMode.Slow)
                {
                    const int Piece = 32 << 10;
                    for (int at = (int)from; at < content.Length; at += Piece)
                    {
                        int length = Math.Min(Piece, content.Length - at);
                        await response.OutputStream.WriteAsync(content.AsMemory(at, length));
                        await Task.Delay(20);
                    }
                }
                else
                {
                    await response.OutputStream.WriteAsync(content.AsMemory((int)from));
                }

                response.Close();
            }
            catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException)
            {
                // The client went away, as the cancellation test makes it.
            }
        }
    }
}
