using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>An open registry on loopback with a two-platform image pushed to it.</summary>
public sealed class OpenRegistryFixture : IAsyncLifetime
{
    private RegistryServer? _server;

    internal RegistryServer Server =>
        _server ?? throw new InvalidOperationException("The registry did not start.");

    internal TestImage Amd64 { get; } = TestImage.Create("amd64", zstdTop: true);

    internal TestImage Arm64 { get; } = TestImage.Create("arm64", layers: 2);

    internal byte[] IndexJson { get; private set; } = [];

    /// <summary>The tag of an OCI index with linux/amd64 and linux/arm64 entries.</summary>
    internal ImageReference MultiPlatform => ImageReference.Parse($"{Server.Host}/test/multi:1.0");

    public async Task InitializeAsync()
    {
        _server = await RegistryServer.StartAsync();
        using var client = ClientFactory.Anonymous();
        await Server.SetUpAsync("Pushing the test images", async () =>
            IndexJson = await TestImage.PushIndexAsync(client, MultiPlatform, Amd64, Arm64));
    }

    public Task DisposeAsync()
    {
        _server?.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>A temp folder for a test's caches and files, deleted on dispose.</summary>
internal sealed class TempFolder : IDisposable
{
    public TempFolder() => Path = Directory.CreateTempSubdirectory("msb-images-").FullName;

    public string Path { get; }

    public LayerCache NewCache() => new(System.IO.Path.Join(Path, "cache"));

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // Left behind in /tmp at worst; never hide a test's own outcome.
        }
    }
}

/// <summary>Records every request a client sends and the status it got, without changing either.</summary>
internal sealed class RecordingHandler : DelegatingHandler
{
    public RecordingHandler()
        : base(new SocketsHttpHandler { AutomaticDecompression = DecompressionMethods.None })
    {
    }

    public ConcurrentQueue<RecordedRequest> Requests { get; } = new();

    protected override async Task<HttpResponseMessage> SendAsync(
        HttpRequestMessage request, CancellationToken cancellationToken)
    {
        HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
        Requests.Enqueue(new RecordedRequest(request.Method.Method, request.RequestUri!,
            request.Headers.Range?.ToString(), request.Headers.Authorization?.Scheme, response.StatusCode));
        return response;
    }
}

internal sealed record RecordedRequest(
    string Method, Uri Uri, string? Range, string? AuthScheme, HttpStatusCode Status);

/// <summary>Collects progress reports synchronously (Progress&lt;T&gt; would post them later).</summary>
internal sealed class ProgressLog : IProgress<LayerProgress>
{
    public ConcurrentQueue<LayerProgress> Reports { get; } = new();

    public void Report(LayerProgress value) => Reports.Enqueue(value);

    public LayerProgress? First(string digest) => Reports.FirstOrDefault(r => r.Digest == digest);

    public LayerProgress? Last(string digest) => Reports.LastOrDefault(r => r.Digest == digest);
}

internal static class ClientFactory
{
    public static RegistryClient Anonymous(HttpMessageHandler? handler = null) =>
        new(new RegistryClientOptions { Credentials = RegistryCredentials.None, Handler = handler });
}

internal static class Timing
{
    /// <summary>Fails a test that hangs instead of letting it hold the whole run.</summary>
    public static CancellationToken Limit(int seconds = 60) =>
        Debugger.IsAttached
            ? CancellationToken.None
            : new CancellationTokenSource(TimeSpan.FromSeconds(seconds)).Token;
}
