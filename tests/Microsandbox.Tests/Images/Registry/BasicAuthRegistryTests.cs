using System.Diagnostics;
using System.Text;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>A registry that wants Basic auth (htpasswd with a bcrypt entry), with one image pushed.</summary>
public sealed class BasicAuthRegistryFixture : IAsyncLifetime
{
    public const string User = "alice";
    public const string Password = "s3cret-for-tests";

    private RegistryServer? _server;
    private string? _folder;

    internal RegistryServer Server =>
        _server ?? throw new InvalidOperationException("The registry did not start.");

    internal TestImage Image { get; } = TestImage.Create(layers: 2);

    internal ImageReference Reference => ImageReference.Parse($"{Server.Host}/private/app:1.0");

    public async Task InitializeAsync()
    {
        _folder = Directory.CreateTempSubdirectory("msb-htpasswd-").FullName;
        string htpasswd = Path.Join(_folder, "htpasswd");
        await File.WriteAllTextAsync(htpasswd, await BcryptEntryAsync(User, Password));
        _server = await RegistryServer.StartAsync(
            $"  htpasswd:\n    realm: msb-test\n    path: {htpasswd}\n");
        using var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.From(new Dictionary<string, RegistryCredential>
            {
                [Server.Host] = new(User, Password),
            }),
        });
        await Server.SetUpAsync("Pushing the test image", () => Image.PushAsync(client, Reference));
    }

    public Task DisposeAsync()
    {
        _server?.Dispose();
        if (_folder is not null)
        {
            Directory.Delete(_folder, recursive: true);
        }

        return Task.CompletedTask;
    }

    /// <summary>An htpasswd line in bcrypt, the one hash the registry takes.</summary>
    private static async Task<string> BcryptEntryAsync(string user, string password)
    {
        string binary = File.Exists("/usr/bin/htpasswd") ? "/usr/bin/htpasswd"
            : throw new InvalidOperationException(
                "htpasswd is not installed: these tests need Debian's apache2-utils package "
                + "(apt-get install apache2-utils), which ./build.ps1 Bootstrap installs.");
        var start = new ProcessStartInfo(binary, ["-nbB", user, password])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        string output = await process.StandardOutput.ReadToEndAsync();
        string error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0 || !output.StartsWith(user + ":$2", StringComparison.Ordinal))
        {
            throw new InvalidOperationException($"htpasswd failed ({process.ExitCode}): {error}");
        }

        return output.Trim() + "\n";
    }
}

/// <summary>Basic auth against a real registry: refused without or with wrong credentials.</summary>
public sealed class BasicAuthRegistryTests : IClassFixture<BasicAuthRegistryFixture>, IDisposable
{
    private readonly BasicAuthRegistryFixture _registry;
    private readonly TempFolder _temp = new();

    public BasicAuthRegistryTests(BasicAuthRegistryFixture registry) => _registry = registry;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Without_credentials_the_pull_is_RegistryAuthFailed()
    {
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(_registry.Reference, cache, null, null, Timing.Limit()));

        Assert.Equal("RegistryAuthFailed", error.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidOperation, error.Kind);
        Assert.Equal(_registry.Reference.ToString(), error.Target);
        Assert.Empty(cache.ListBlobs());
    }

    [Fact]
    public async Task With_a_wrong_password_the_pull_is_RegistryAuthFailed()
    {
        string config = WriteDockerConfig(Auth(BasicAuthRegistryFixture.User, "not-the-password"));
        LayerCache cache = _temp.NewCache();
        using var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.FromDockerConfig(config),
        });

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(_registry.Reference, cache, null, null, Timing.Limit()));

        Assert.Equal("RegistryAuthFailed", error.ErrorId);
        Assert.Contains(BasicAuthRegistryFixture.User, error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("not-the-password", error.Message, StringComparison.Ordinal);
        Assert.Empty(cache.ListBlobs());
    }

    [Fact]
    public async Task With_credentials_from_the_Docker_config_file_the_pull_succeeds()
    {
        string config = WriteDockerConfig(
            Auth(BasicAuthRegistryFixture.User, BasicAuthRegistryFixture.Password));
        LayerCache cache = _temp.NewCache();
        var handler = new RecordingHandler();
        using var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.FromDockerConfig(config),
            Handler = handler,
        });

        PulledImage image = await client.PullAsync(_registry.Reference, cache, null, null, Timing.Limit());

        Assert.Equal(_registry.Image.ManifestDigest, image.ManifestDigest);
        Assert.All(_registry.Image.Layers,
            l => Assert.Equal(l.Blob, File.ReadAllBytes(cache.BlobPath(l.Digest))));

        // One challenge, then every request carries the credentials from the start.
        Assert.Single(handler.Requests, r => r.Status == System.Net.HttpStatusCode.Unauthorized);
        Assert.All(handler.Requests.Skip(1), r => Assert.Equal("Basic", r.AuthScheme));
    }

    [Fact]
    public async Task Separate_username_and_password_entries_are_read_too()
    {
        string config = WriteDockerConfig(
            $"\"username\":\"{BasicAuthRegistryFixture.User}\","
            + $"\"password\":\"{BasicAuthRegistryFixture.Password}\"",
            key: $"http://{_registry.Server.Host}/v2/");
        using var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.FromDockerConfig(config),
        });

        ManifestDocument manifest = await client.GetManifestAsync(_registry.Reference, Timing.Limit());

        Assert.Equal(_registry.Image.ManifestDigest, manifest.Digest);
    }

    [Fact]
    public async Task Ping_with_wrong_credentials_is_RegistryAuthFailed_and_without_any_succeeds()
    {
        string config = WriteDockerConfig(Auth(BasicAuthRegistryFixture.User, "wrong"));
        using var wrong = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.FromDockerConfig(config),
        });
        using var anonymous = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            wrong.PingAsync(_registry.Server.Host, Timing.Limit()));
        await anonymous.PingAsync(_registry.Server.Host, Timing.Limit());

        Assert.Equal("RegistryAuthFailed", error.ErrorId);
    }

    private static string Auth(string user, string password) =>
        $"\"auth\":\"{Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"))}\"";

    private string WriteDockerConfig(string entry, string? key = null)
    {
        string folder = Path.Join(_temp.Path, "docker-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(folder);
        string path = Path.Join(folder, "config.json");
        File.WriteAllText(path, $$"""
            {
              "auths": {
                "other.example:5000": { "auth": "b3RoZXI6dXNlcg==" },
                "{{key ?? _registry.Server.Host}}": { {{entry}} }
              }
            }
            """);
        return path;
    }
}
