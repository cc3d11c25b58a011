using System.Text;
using System.Text.Json.Nodes;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Cache;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>
/// A registry with token auth trusting a loopback token service, as Docker Hub and most hosted
/// registries work: a public and a private repository, each with an image.
/// </summary>
public sealed class TokenAuthRegistryFixture : IAsyncLifetime
{
    public const string User = "alice";
    public const string Password = "token-test-password";

    private string? _folder;
    private RegistryServer? _server;

    internal TokenService Tokens { get; private set; } = null!;

    internal RegistryServer Server =>
        _server ?? throw new InvalidOperationException("The registry did not start.");

    internal TestImage PublicImage { get; } = TestImage.Create(layers: 2);

    internal TestImage PrivateImage { get; } = TestImage.Create(layers: 1);

    internal ImageReference Public => ImageReference.Parse($"{Server.Host}/public/app:1");

    internal ImageReference Private => ImageReference.Parse($"{Server.Host}/private/app:1");

    public async Task InitializeAsync()
    {
        _folder = Directory.CreateTempSubdirectory("msb-token-").FullName;
        Tokens = new TokenService(_folder, new Dictionary<string, string> { [User] = Password });
        _server = await RegistryServer.StartAsync(Tokens.RegistryAuthYaml);
        using var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.From(new Dictionary<string, RegistryCredential>
            {
                [Server.Host] = new(User, Password),
            }),
        });
        await Server.SetUpAsync("Pushing the test images", async () =>
        {
            await PublicImage.PushAsync(client, Public);
            await PrivateImage.PushAsync(client, Private);
        });
    }

    public Task DisposeAsync()
    {
        _server?.Dispose();
        Tokens?.Dispose();
        if (_folder is not null)
        {
            Directory.Delete(_folder, recursive: true);
        }

        return Task.CompletedTask;
    }
}

/// <summary>Bearer tokens from the registry's token service: anonymous, with credentials, refused.</summary>
public sealed class TokenAuthRegistryTests : IClassFixture<TokenAuthRegistryFixture>, IDisposable
{
    private readonly TokenAuthRegistryFixture _registry;
    private readonly TempFolder _temp = new();

    public TokenAuthRegistryTests(TokenAuthRegistryFixture registry) => _registry = registry;

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task A_public_repository_pulls_with_an_anonymous_token()
    {
        LayerCache cache = _temp.NewCache();
        var handler = new RecordingHandler();
        using var client = ClientFactory.Anonymous(handler);

        PulledImage image = await client.PullAsync(_registry.Public, cache, null, null, Timing.Limit());

        Assert.Equal(_registry.PublicImage.ManifestDigest, image.ManifestDigest);
        Assert.Contains(("", "repository:public/app:pull"), _registry.Tokens.Requests);
        Assert.All(handler.Requests.Where(r => r.Uri.Port == _registry.Server.Port).Skip(1),
            r => Assert.Equal("Bearer", r.AuthScheme));
    }

    [Fact]
    public async Task A_private_repository_refuses_an_anonymous_pull_with_RegistryAuthFailed()
    {
        LayerCache cache = _temp.NewCache();
        using var client = ClientFactory.Anonymous();

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(_registry.Private, cache, null, null, Timing.Limit()));

        Assert.Equal("RegistryAuthFailed", error.ErrorId);
        Assert.Equal(_registry.Private.ToString(), error.Target);
        Assert.Empty(cache.ListBlobs());
    }

    [Fact]
    public async Task Credentials_from_the_Docker_config_file_get_a_token_for_the_private_repository()
    {
        LayerCache cache = _temp.NewCache();
        using var client = ClientWithDockerConfig(TokenAuthRegistryFixture.Password);

        PulledImage image = await client.PullAsync(_registry.Private, cache, null, null, Timing.Limit());

        Assert.Equal(_registry.PrivateImage.ManifestDigest, image.ManifestDigest);
        Assert.Contains((TokenAuthRegistryFixture.User, "repository:private/app:pull"),
            _registry.Tokens.Requests);
        Assert.All(_registry.PrivateImage.Layers, l => Assert.True(cache.Contains(l.Digest)));
    }

    [Fact]
    public async Task A_wrong_password_is_refused_by_the_token_service_with_RegistryAuthFailed()
    {
        LayerCache cache = _temp.NewCache();
        using var client = ClientWithDockerConfig("wrong-password");

        var error = await Assert.ThrowsAsync<SandboxException>(() =>
            client.PullAsync(_registry.Private, cache, null, null, Timing.Limit()));

        Assert.Equal("RegistryAuthFailed", error.ErrorId);
        Assert.Contains("token service", error.Message, StringComparison.Ordinal);
        Assert.Empty(cache.ListBlobs());
    }

    [Fact]
    public async Task A_token_sent_as_access_token_is_used_too()
    {
        _registry.Tokens.UseAccessTokenField = true;
        try
        {
            using var client = ClientFactory.Anonymous();

            ManifestDocument manifest = await client.GetManifestAsync(_registry.Public, Timing.Limit());

            Assert.Equal(_registry.PublicImage.ManifestDigest, manifest.Digest);
        }
        finally
        {
            _registry.Tokens.UseAccessTokenField = false;
        }
    }

    [Fact]
    public async Task A_token_is_fetched_once_per_scope_and_reused()
    {
        using var client = ClientFactory.Anonymous();
        await client.GetManifestAsync(_registry.Public, Timing.Limit());
        int before = _registry.Tokens.Requests.Count;

        await client.GetManifestAsync(_registry.Public, Timing.Limit());
        await client.GetBlobAsync(_registry.Public, _registry.PublicImage.Manifest.Config, Timing.Limit());

        Assert.Equal(before, _registry.Tokens.Requests.Count);
    }

    private RegistryClient ClientWithDockerConfig(string password)
    {
        string path = Path.Join(_temp.Path, "config.json");
        string auth = Convert.ToBase64String(
            Encoding.UTF8.GetBytes($"{TokenAuthRegistryFixture.User}:{password}"));
        var config = new JsonObject
        {
            ["auths"] = new JsonObject { [_registry.Server.Host] = new JsonObject { ["auth"] = auth } },
        };
        File.WriteAllText(path, config.ToJsonString());
        return new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.FromDockerConfig(path),
        });
    }
}
