#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# What an image's config says about commands: its User, Entrypoint and Cmd, on the built-in
# BusyBox layer; and a Debian image with python3, built from Debian's packages by the build
# (build/TestImages.ps1), pushed to a real registry on loopback and run as the issue asks.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest

    $script:Registry = Start-TestRegistry
    $script:Port = $script:Registry.Port
    $script:Busybox = "127.0.0.1:$script:Port/busybox-user:test"
    $null = Publish-TestImage -Reference $script:Busybox -Marker user -Setting @{
        User = 'nobody'; Entrypoint = @('/bin/echo', 'entry'); Cmd = @('default', 'args')
    }
    $script:PythonLayer = $env:MSB_TEST_PYTHON_LAYER
    if (-not $script:PythonLayer -or -not (Test-Path $script:PythonLayer)) {
        throw 'MSB_TEST_PYTHON_LAYER names no layer tar; build.ps1 Test builds it with mmdebstrap.'
    }
    $script:Python = "127.0.0.1:$script:Port/python"
    $null = Publish-TestImage -Reference $script:Python -LayerPath $script:PythonLayer -Marker python -Setting @{
        Env = @('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8')
        Cmd = @('python3', '-c', 'print("from the image")')
    }
    $script:UserBox = New-Sandbox -Name cfg-user -Image $script:Busybox -WarningAction SilentlyContinue `
        -ErrorAction Stop
}

AfterAll {
    Get-Sandbox -Name 'cfg-*', 'python-*' -ErrorAction Ignore | Remove-Sandbox -Force
    Stop-TestRegistry $script:Registry
}

Describe 'The image config User' -Tag VM {
    It 'runs commands as the image user, with that user''s home' {
        $script:UserBox.User | Should -Be 'nobody'
        Invoke-SandboxCommand -Name cfg-user 'id -u; id -g; echo $HOME' | Should -Be @('65534', '65534', '/nonexistent')
    }

    It 'lets -User name another user, by name or by uid and gid' {
        Invoke-SandboxCommand -Name cfg-user 'id -u' -User root | Should -Be '0'
        Invoke-SandboxCommand -Name cfg-user 'id -u' -User '65534:65534' | Should -Be '65534'
        Invoke-SandboxCommand -Name cfg-user 'id -u' -User 'nobody:nogroup' | Should -Be '65534'
    }

    It 'refuses a user or group the image does not know, with UserNotFound' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name cfg-user 'id -u' -User ghost }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'UserNotFound'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'ObjectNotFound'
        $r.Errors[0].TargetObject | Should -Be 'cfg-user'
        $r = Invoke-Captured { Invoke-SandboxCommand -Name cfg-user 'id -u' -User 'nobody:ghosts' }
        Get-ErrorId $r.Errors[0] | Should -Be 'UserNotFound'
    }

    It 'refuses a group other than the user''s primary group, with UserGroupNotSupported' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name cfg-user 'id -u' -User 'nobody:root' }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'UserGroupNotSupported'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidArgument'
    }

    It 'says PermissionDenied when the user may not run the program' {
        Invoke-SandboxCommand -Name cfg-user -User root `
            'printf "#!/bin/sh\necho secret\n" > /tmp/secret; chmod 700 /tmp/secret'
        Invoke-SandboxCommand -Name cfg-user -User root -FilePath /tmp/secret | Should -Be 'secret'
        $r = Invoke-Captured { Invoke-SandboxCommand -Name cfg-user -FilePath /tmp/secret }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'PermissionDenied'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'PermissionDenied'
    }
}

Describe 'The image config Entrypoint and Cmd' -Tag VM {
    It 'runs the entrypoint with Cmd when no arguments are given' {
        $script:UserBox.Entrypoint | Should -Be @('/bin/echo', 'entry')
        $script:UserBox.Cmd | Should -Be @('default', 'args')
        Invoke-SandboxCommand -Name cfg-user -UseImageCommand | Should -Be 'entry default args'
    }

    It 'replaces Cmd, never the entrypoint, with -ArgumentList' {
        Invoke-SandboxCommand -Name cfg-user -UseImageCommand -ArgumentList 'x', 'y z' | Should -Be 'entry x y z'
    }

    It 'refuses -UseImageCommand for an image without either, with ImageCommandMissing' {
        $null = New-Sandbox -Name cfg-plain -WarningAction SilentlyContinue -ErrorAction Stop
        $r = Invoke-Captured { Invoke-SandboxCommand -Name cfg-plain -UseImageCommand }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'ImageCommandMissing'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'InvalidOperation'
        $r.Errors[0].TargetObject | Should -Be 'cfg-plain'
    }

    It 'lets New-Sandbox -User set the default user over the image''s' {
        $null = New-Sandbox -Name cfg-plain -Image $script:Busybox -User root -Replace -ReplaceTimeout 0 `
            -WarningAction SilentlyContinue -ErrorAction Stop
        (Get-Sandbox -Name cfg-plain).User | Should -Be 'root'
        Invoke-SandboxCommand -Name cfg-plain 'id -u; echo $HOME' | Should -Be @('0', '/root')
    }
}

Describe 'A Debian image with python3 from a registry on loopback' -Tag VM {
    It 'prints 42 from New-Sandbox -Image REGISTRY/python piped to Invoke-SandboxCommand' {
        $output = New-Sandbox -Image $script:Python -WarningAction SilentlyContinue -ErrorAction Stop |
            Invoke-SandboxCommand 'python3 -c "print(6*7)"'
        $output | Should -Be '42'
        $script:PythonBox = @(Get-Sandbox -Name 'python-*')
        $script:PythonBox.Count | Should -Be 1
        $script:PythonBox[0].Name | Should -Match '^python-[0-9a-f]{6}$'
        $script:PythonBox[0].Image | Should -Be "$script:Python`:latest"
    }

    It 'is a real Debian root: dpkg knows python3, and the image Cmd runs' {
        $name = $script:PythonBox[0].Name
        Invoke-SandboxCommand -Name $name 'cat /etc/debian_version' | Should -Match '^12\.'
        Invoke-SandboxCommand -Name $name "dpkg-query -W -f='`${Status}' python3" | Should -Be 'install ok installed'
        Invoke-SandboxCommand -Name $name -UseImageCommand | Should -Be 'from the image'
    }

    It 'runs python3 as a user of the Debian image' {
        $name = $script:PythonBox[0].Name
        Invoke-SandboxCommand -Name $name -User nobody -FilePath python3 -ArgumentList '-c',
            'import os, pwd; print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name)' | Should -Be '65534 nobody'
    }
}
