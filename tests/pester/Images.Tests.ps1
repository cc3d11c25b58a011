#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# OCI images from a real registry (Debian's docker-registry) on loopback: the built-in image's
# layer is pushed with a config of its own, then booted as any image would be.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest

    function Get-FreePort {
        $listener = [System.Net.Sockets.TcpListener]::new([System.Net.IPAddress]::Loopback, 0)
        $listener.Start()
        try { $listener.LocalEndpoint.Port } finally { $listener.Stop() }
    }

    $script:RegistryDir = Join-Path ([IO.Path]::GetTempPath()) "msb-registry-$PID"
    New-Item -ItemType Directory -Force "$script:RegistryDir/data" | Out-Null
    $script:Port = Get-FreePort
    Set-Content "$script:RegistryDir/config.yml" @"
version: 0.1
storage:
  filesystem:
    rootdirectory: $script:RegistryDir/data
http:
  addr: 127.0.0.1:$script:Port
"@
    $script:Registry = Start-Process /usr/bin/docker-registry -ArgumentList 'serve', "$script:RegistryDir/config.yml" `
        -RedirectStandardError "$script:RegistryDir/registry.log" -RedirectStandardOutput "$script:RegistryDir/out.log" `
        -PassThru
    $deadline = [DateTime]::UtcNow.AddSeconds(20)
    do {
        Start-Sleep -Milliseconds 100
        $up = try { (Invoke-WebRequest "http://127.0.0.1:$script:Port/v2/" -SkipHttpErrorCheck).StatusCode -eq 200 } catch { $false }
    } until ($up -or [DateTime]::UtcNow -gt $deadline)
    if (-not $up) { throw "docker-registry did not start: $(Get-Content "$script:RegistryDir/registry.log" -Raw)" }

    # The built-in image's layer, gzipped, with an image config that sets what the engine applies.
    $guest = Join-Path (Split-Path $env:MSB_TEST_MODULE_PATH) 'guest'
    $tar = [IO.File]::ReadAllBytes((Join-Path $guest 'rootfs.tar'))
    $buffer = [IO.MemoryStream]::new()
    $gzip = [IO.Compression.GZipStream]::new($buffer, [IO.Compression.CompressionLevel]::Fastest, $true)
    $gzip.Write($tar, 0, $tar.Length)
    $gzip.Dispose()
    $layer = $buffer.ToArray()
    $diffId = 'sha256:' + [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($tar)).ToLowerInvariant()
    $config = [Text.Encoding]::UTF8.GetBytes((@{
        architecture = 'amd64'; os = 'linux'
        config       = @{
            Env        = @('PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'FROM_IMAGE=yes', 'SHARED=image')
            WorkingDir = '/tmp'
            Labels     = @{ 'org.example.team' = 'images'; 'tier' = 'image'; 'sandbox.owner' = 'nobody' }
        }
        rootfs       = @{ type = 'layers'; diff_ids = @($diffId) }
    } | ConvertTo-Json -Depth 5))
    $client = [Microsandbox.Engine.Images.Registry.RegistryClient]::new()
    $ref = [Microsandbox.Engine.Images.Registry.ImageReference]::Parse("127.0.0.1:$script:Port/busybox:test")
    $none = [Threading.CancellationToken]::None
    $layerDigest = $client.PushBlobAsync($ref, [ReadOnlyMemory[byte]]$layer, $none).GetAwaiter().GetResult()
    $configDigest = $client.PushBlobAsync($ref, [ReadOnlyMemory[byte]]$config, $none).GetAwaiter().GetResult()
    $manifest = [Text.Encoding]::UTF8.GetBytes((@{
        schemaVersion = 2
        mediaType     = 'application/vnd.oci.image.manifest.v1+json'
        config        = @{ mediaType = 'application/vnd.oci.image.config.v1+json'; digest = $configDigest; size = $config.Length }
        layers        = @(@{ mediaType = 'application/vnd.oci.image.layer.v1.tar+gzip'; digest = $layerDigest; size = $layer.Length })
    } | ConvertTo-Json -Depth 5))
    $null = $client.PushManifestAsync($ref, 'application/vnd.oci.image.manifest.v1+json',
        [ReadOnlyMemory[byte]]$manifest, $none).GetAwaiter().GetResult()
    $client.Dispose()
    $script:Image = "127.0.0.1:$script:Port/busybox:test"
}

AfterAll {
    Get-Sandbox -Name 'img-*' -ErrorAction Ignore | Remove-Sandbox -Force
    if ($script:Registry) { Stop-Process -Id $script:Registry.Id -ErrorAction Ignore }
    Remove-Item $script:RegistryDir -Recurse -Force -ErrorAction Ignore
}

Describe 'Sandboxes from OCI images' -Tag VM {
    It 'pulls an image from a registry and applies its config, user settings winning' {
        $s = New-Sandbox -Name img-one -Image $script:Image -Label tier=user -Environment @{ SHARED = 'user' } `
            -WarningAction SilentlyContinue -ErrorAction Stop
        $s.Image | Should -Be $script:Image
        $s.Labels['org.example.team'] | Should -Be 'images'
        $s.Labels['tier'] | Should -Be 'user'
        $s.Labels.ContainsKey('sandbox.owner') | Should -BeFalse
        Invoke-SandboxCommand -Name img-one -Command 'echo "$FROM_IMAGE $SHARED"; pwd' | Should -Be @('yes user', '/tmp')
    }

    It 'shares one cached base among sandboxes of the image, and works offline with -PullPolicy Never' {
        $null = New-Sandbox -Name img-two -Image $script:Image -PullPolicy Never -WarningAction SilentlyContinue `
            -ErrorAction Stop
        Invoke-SandboxCommand -Name img-two -Command 'echo $FROM_IMAGE' | Should -Be 'yes'
        $bases = @(Get-ChildItem (Join-Path $env:MSB_HOME 'cache/images') -Filter '*.erofs' |
            Where-Object Name -NotLike 'default-*')
        $bases.Count | Should -Be 1
    }

    It 'rejects <Case> with <Id>, creating nothing' -ForEach @(
        @{ Case = 'an unknown tag'; Image = { "127.0.0.1:$script:Port/busybox:nosuchtag" }; Id = 'ImageNotFound' }
        @{ Case = 'an uncached image under -PullPolicy Never'; Image = { "127.0.0.1:$script:Port/other:1" }
            Id = 'ImageNotFound'; Never = $true }
        @{ Case = 'an unreachable registry'; Image = { '127.0.0.1:9/busybox:test' }; Id = 'RegistryUnreachable' }
        @{ Case = 'a malformed reference'; Image = { 'Bad Name!!' }; Id = 'InvalidImageReference' }
    ) {
        $name = "img-bad-$([guid]::NewGuid().ToString('N').Substring(0, 6))"
        $params = @{ Name = $name; Image = (& $Image) }
        if ($Never) { $params.PullPolicy = 'Never' }
        $r = Invoke-Captured { New-Sandbox @params -WarningAction SilentlyContinue }
        Get-ErrorId $r.Errors[0] | Should -Be $Id
        $r.Errors[0].TargetObject | Should -Not -BeNullOrEmpty
        Get-Sandbox | Where-Object Name -EQ $name | Should -BeNullOrEmpty
        Get-ChildItem (Join-Path $env:MSB_HOME 'cache/incoming') -Filter '*.tmp*' -ErrorAction Ignore |
            Should -BeNullOrEmpty
    }
}
