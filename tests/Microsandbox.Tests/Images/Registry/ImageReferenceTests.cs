using Microsandbox.Engine;
using Microsandbox.Engine.Images.Registry;

namespace Microsandbox.Tests.Images.Registry;

public sealed class ImageReferenceTests
{
    private const string Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    [Theory]
    [InlineData("python", "docker.io", "library/python", "latest", null)]
    [InlineData("python:3.12-slim", "docker.io", "library/python", "3.12-slim", null)]
    [InlineData("user/app", "docker.io", "user/app", "latest", null)]
    [InlineData("user/app:v1.0", "docker.io", "user/app", "v1.0", null)]
    [InlineData("docker.io/python", "docker.io", "library/python", "latest", null)]
    [InlineData("index.docker.io/library/python:3", "docker.io", "library/python", "3", null)]
    [InlineData("registry-1.docker.io/user/app", "docker.io", "user/app", "latest", null)]
    [InlineData("127.0.0.1:5000/python", "127.0.0.1:5000", "python", "latest", null)]
    [InlineData("127.0.0.1:5000/team/app:dev", "127.0.0.1:5000", "team/app", "dev", null)]
    [InlineData("localhost:5000/x", "localhost:5000", "x", "latest", null)]
    [InlineData("localhost/x:1", "localhost", "x", "1", null)]
    [InlineData("ghcr.io/owner/repo/sub:tag_1", "ghcr.io", "owner/repo/sub", "tag_1", null)]
    [InlineData("[::1]:5000/app", "[::1]:5000", "app", "latest", null)]
    [InlineData("my-registry.example.com:443/a.b/c__d/e-f", "my-registry.example.com:443", "a.b/c__d/e-f",
        "latest", null)]
    [InlineData("python@" + Digest, "docker.io", "library/python", null, Digest)]
    [InlineData("python:3.12@" + Digest, "docker.io", "library/python", "3.12", Digest)]
    [InlineData("127.0.0.1:5000/app@" + Digest, "127.0.0.1:5000", "app", null, Digest)]
    public void Good_references_parse_with_Docker_Hub_names_filled_in(
        string text, string registry, string repository, string? tag, string? digest)
    {
        ImageReference reference = ImageReference.Parse(text);

        Assert.Equal(registry, reference.Registry);
        Assert.Equal(repository, reference.Repository);
        Assert.Equal(tag, reference.Tag);
        Assert.Equal(digest, reference.Digest);
        Assert.Equal(reference, ImageReference.Parse(reference.ToString()));
    }

    [Theory]
    [InlineData("python", "docker.io/library/python:latest")]
    [InlineData("user/app@" + Digest, "docker.io/user/app@" + Digest)]
    [InlineData("python:3@" + Digest, "docker.io/library/python:3@" + Digest)]
    public void The_canonical_text_names_registry_repository_tag_and_digest(string text, string canonical)
    {
        Assert.Equal(canonical, ImageReference.Parse(text).ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("Python")]
    [InlineData("user/App")]
    [InlineData("python:")]
    [InlineData("python:-bad")]
    [InlineData("python:tag with space")]
    [InlineData("python@sha256:abc")]
    [InlineData("python@md5:0123456789abcdef0123456789abcdef")]
    [InlineData("python@SHA256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("/python")]
    [InlineData("python/")]
    [InlineData("a//b")]
    [InlineData("-python")]
    [InlineData("python-")]
    [InlineData("127.0.0.1:99999/python")]
    [InlineData("127.0.0.1:/python")]
    [InlineData("bad_host.example.com/app")]
    [InlineData("reg.example.com/")]
    [InlineData("python::1")]
    public void Bad_references_are_InvalidImageReference_with_the_text_as_target(string text)
    {
        var error = Assert.Throws<SandboxException>(() => ImageReference.Parse(text));

        Assert.Equal("InvalidImageReference", error.ErrorId);
        Assert.Equal(SandboxErrorKind.InvalidArgument, error.Kind);
        Assert.Equal(text, error.Target);
        Assert.False(ImageReference.TryParse(text, out _));
    }

    [Fact]
    public void A_tag_longer_than_128_characters_is_refused()
    {
        Assert.False(ImageReference.TryParse("python:" + new string('a', 129), out _));
        Assert.True(ImageReference.TryParse("python:" + new string('a', 128), out _));
    }

    [Fact]
    public void Docker_Hub_is_served_from_its_API_host()
    {
        Assert.Equal("registry-1.docker.io", ImageReference.Parse("python").ApiHost);
        Assert.Equal("127.0.0.1:5000", ImageReference.Parse("127.0.0.1:5000/python").ApiHost);
    }

    [Fact]
    public void The_manifest_is_asked_for_by_digest_when_one_is_pinned()
    {
        Assert.Equal("3.12", ImageReference.Parse("python:3.12").ManifestReference);
        Assert.Equal(Digest, ImageReference.Parse("python:3.12@" + Digest).ManifestReference);
        Assert.Equal("docker.io/library/python@" + Digest,
            ImageReference.Parse("python:3").WithDigest(Digest).ToString());
    }

    [Theory]
    [InlineData("localhost:5000", true)]
    [InlineData("localhost", true)]
    [InlineData("127.0.0.1:5000", true)]
    [InlineData("127.5.6.7", true)]
    [InlineData("[::1]:5000", true)]
    [InlineData("registry.example.com", false)]
    [InlineData("127.example.com:5000", false)]
    [InlineData("10.0.0.1:5000", false)]
    public void Loopback_registries_are_spoken_to_over_plain_http(string registry, bool plain)
    {
        Assert.Equal(plain, RegistryClient.IsLoopback(registry));
        using var client = ClientFactory.Anonymous();
        Assert.Equal(plain ? "http" : "https", client.BaseUri(registry).Scheme);
    }

    [Fact]
    public void A_registry_named_insecure_is_spoken_to_over_plain_http()
    {
        using var client = new RegistryClient(new RegistryClientOptions
        {
            Credentials = RegistryCredentials.None,
            InsecureRegistries = ["registry.lan:5000"],
        });

        Assert.Equal(new Uri("http://registry.lan:5000/"), client.BaseUri("registry.lan:5000"));
        Assert.Equal(new Uri("https://registry.lan:6000/"), client.BaseUri("registry.lan:6000"));
        Assert.Equal(new Uri("https://registry-1.docker.io/"), client.BaseUri("docker.io"));
    }
}
