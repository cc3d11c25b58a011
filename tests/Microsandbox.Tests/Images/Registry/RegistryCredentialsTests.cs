using System.Text;
using Microsandbox.Engine;
using Microsandbox.Engine.Images.Registry;
using Microsandbox.Tests.Engine;

namespace Microsandbox.Tests.Images.Registry;

/// <summary>The Docker config file as docker login writes it; challenges as registries send them.</summary>
[Collection("Environment")]
public sealed class RegistryCredentialsTests : IDisposable
{
    private readonly TempFolder _temp = new();
    private readonly EnvironmentScope _env = new();

    public void Dispose()
    {
        _env.Dispose();
        _temp.Dispose();
    }

    [Fact]
    public void Auth_entries_decode_and_keys_with_scheme_and_path_match_their_registry()
    {
        string path = Write("""
            {
              "auths": {
                "https://index.docker.io/v1/": { "auth": "aHViLXVzZXI6aHViOnBhc3M=" },
                "https://ghcr.io": { "username": "gh-user", "password": "gh-token" },
                "127.0.0.1:5000": { "auth": "bG9jYWw6cHc=" },
                "empty.example": { }
              },
              "credsStore": "desktop"
            }
            """);

        RegistryCredentials credentials = RegistryCredentials.FromDockerConfig(path);

        Assert.Equal(new RegistryCredential("hub-user", "hub:pass"), credentials.Find("docker.io"));
        Assert.Equal(new RegistryCredential("gh-user", "gh-token"), credentials.Find("ghcr.io"));
        Assert.Equal(new RegistryCredential("local", "pw"), credentials.Find("127.0.0.1:5000"));
        Assert.Null(credentials.Find("127.0.0.1:5001"));
        Assert.Null(credentials.Find("empty.example"));
        Assert.Equal(path, credentials.Source);
    }

    [Fact]
    public void A_missing_file_means_no_credentials()
    {
        string path = Path.Join(_temp.Path, "none.json");

        RegistryCredentials credentials = RegistryCredentials.FromDockerConfig(path);

        Assert.Null(credentials.Find("docker.io"));
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("""{"auths":{"r.example":{"auth":"%%%"}}}""")]
    [InlineData("""{"auths":{"r.example":{"auth":"bm9jb2xvbg=="}}}""")]
    public void A_file_that_is_not_a_Docker_config_is_InvalidDockerConfig(string text)
    {
        string path = Write(text);

        var error = Assert.Throws<SandboxException>(() => RegistryCredentials.FromDockerConfig(path));

        Assert.Equal("InvalidDockerConfig", error.ErrorId);
        Assert.Equal(path, error.Target);
    }

    [Fact]
    public void DOCKER_CONFIG_names_the_folder_of_the_config_file()
    {
        string folder = Path.Join(_temp.Path, "docker-home");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Join(folder, "config.json"), """{"auths":{"r.example":{"auth":"dTpw"}}}""");
        _env.Set("DOCKER_CONFIG", folder);

        Assert.Equal(Path.Join(folder, "config.json"), RegistryCredentials.DefaultConfigPath());
        Assert.Equal(new RegistryCredential("u", "p"),
            RegistryCredentials.FromDockerConfig().Find("r.example"));
    }

    [Fact]
    public void A_credential_never_shows_its_password_as_text()
    {
        string text = new RegistryCredential("me", "secret").ToString();

        Assert.DoesNotContain("secret", text, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bearer_challenge_yields_realm_service_and_scope()
    {
        AuthChallenge challenge = AuthChallenge.Parse(
            "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
            + "scope=\"repository:library/python:pull\",error=\"invalid_token\"")!;

        Assert.True(challenge.IsBearer);
        Assert.Equal("https://auth.docker.io/token", challenge["realm"]);
        Assert.Equal("registry.docker.io", challenge["service"]);
        Assert.Equal("repository:library/python:pull", challenge["scope"]);
        Assert.Equal("invalid_token", challenge["ERROR"]);
    }

    [Fact]
    public void Challenge_values_may_be_unquoted_or_hold_escaped_quotes_and_commas()
    {
        AuthChallenge challenge = AuthChallenge.Parse(
            "Basic realm=\"a \\\"quoted\\\", realm\", charset=UTF-8")!;

        Assert.True(challenge.IsBasic);
        Assert.Equal("a \"quoted\", realm", challenge["realm"]);
        Assert.Equal("UTF-8", challenge["charset"]);
    }

    [Fact]
    public void A_challenge_with_two_scopes_keeps_both_in_one_value()
    {
        AuthChallenge challenge = AuthChallenge.Parse(
            "Bearer realm=\"http://127.0.0.1/token\",scope=\"repository:a:pull repository:b:pull\"")!;

        Assert.Equal("repository:a:pull repository:b:pull", challenge["scope"]);
    }

    private string Write(string text)
    {
        string path = Path.Join(_temp.Path, Guid.NewGuid().ToString("N") + ".json");
        File.WriteAllText(path, text, Encoding.UTF8);
        return path;
    }
}
