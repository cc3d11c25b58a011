#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# A command's streams: pipeline input as stdin, -InputObject and -InputFile, merged stderr, binary
# output, time limits. One sandbox serves every test.

BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $env:MSB_TEST_MODULE_PATH = Import-MicrosandboxUnderTest
    $null = New-Sandbox -Name streams -WarningAction SilentlyContinue -ErrorAction Stop
    $script:Scratch = Join-Path ([IO.Path]::GetTempPath()) "msb-streams-$PID"
    New-Item -ItemType Directory -Force $script:Scratch | Out-Null

    function Get-Sha256([byte[]] $Bytes) {
        [Convert]::ToHexString([Security.Cryptography.SHA256]::HashData($Bytes)).ToLowerInvariant()
    }
}

AfterAll {
    Remove-Sandbox -Name streams -Force -ErrorAction Ignore
    Remove-Item $script:Scratch -Recurse -Force -ErrorAction Ignore
}

Describe 'Standard input' -Tag VM {
    It 'sends piped strings to the command as lines' {
        'pear', 'apple', 'fig' | Invoke-SandboxCommand -Name streams 'sort' | Should -Be @('apple', 'fig', 'pear')
    }

    It 'sends piped bytes and byte arrays as they are' {
        [byte[]](1, 2, 0, 255) | Invoke-SandboxCommand -Name streams 'od -An -tu1' |
            ForEach-Object Trim | Should -Be '1   2   0 255'
        , [byte[]](10, 0, 13) | Invoke-SandboxCommand -Name streams 'wc -c' | Should -Be '3'
    }

    It 'takes -InputObject without the pipeline' {
        Invoke-SandboxCommand -Name streams 'cat' -InputObject 'given' | Should -Be 'given'
    }

    It 'sends a host file with -InputFile, byte for byte' {
        $bytes = [byte[]]::new(3MB)
        [Random]::new(7).NextBytes($bytes)
        $file = Join-Path $script:Scratch 'input.bin'
        [IO.File]::WriteAllBytes($file, $bytes)
        Invoke-SandboxCommand -Name streams 'sha256sum | cut -d" " -f1' -InputFile $file |
            Should -Be (Get-Sha256 $bytes)
    }

    It 'says InputFileNotFound for a file that is not there' {
        $missing = Join-Path $script:Scratch 'missing.bin'
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'cat' -InputFile $missing }
        Get-ErrorId $r.Errors[0] | Should -Be 'InputFileNotFound'
        $r.Errors[0].TargetObject | Should -Be $missing
    }

    It 'gives end of file at once without input' {
        Invoke-SandboxCommand -Name streams 'wc -c' | Should -Be '0'
    }

    It 'stops feeding a command that closed its input, and still returns its output' {
        1..20000 | ForEach-Object { "line $_" } | Invoke-SandboxCommand -Name streams 'head -n 2' |
            Should -Be @('line 1', 'line 2')
        $LASTEXITCODE | Should -Be 0
    }

    It 'still runs the command once per piped sandbox' {
        Get-Sandbox -Name streams | Invoke-SandboxCommand 'echo per-sandbox' | Should -Be 'per-sandbox'
    }
}

Describe 'Output' -Tag VM {
    It 'merges stderr into the output with -MergeError' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'echo out; echo err >&2' -MergeError }
        $r.Errors | Should -BeNullOrEmpty
        $r.Output | Should -Contain 'out'
        $r.Output | Should -Contain 'err'
    }

    It 'keeps binary output intact with -AsByteStream' {
        # Every byte value, twice, through the guest's printf.
        $chunks = @(Invoke-SandboxCommand -Name streams -AsByteStream `
            'i=0; while [ $i -lt 512 ]; do printf "\\$(printf %o $((i % 256)))"; i=$((i+1)); done')
        $chunks[0] | Should -BeOfType [byte]
        $all = [byte[]]($chunks | ForEach-Object { $_ })
        $expected = [byte[]]((0..511) | ForEach-Object { $_ % 256 })
        $all.Length | Should -Be 512
        Get-Sha256 $all | Should -Be (Get-Sha256 $expected)
    }

    It 'streams tens of megabytes through with checksums equal on both sides' {
        $bytes = [byte[]]::new(24MB)
        [Random]::new(11).NextBytes($bytes)
        $file = Join-Path $script:Scratch 'round.bin'
        [IO.File]::WriteAllBytes($file, $bytes)
        $hash = [Security.Cryptography.IncrementalHash]::CreateHash('SHA256')
        Invoke-SandboxCommand -Name streams 'cat' -InputFile $file -AsByteStream |
            ForEach-Object { $hash.AppendData($_) }
        [Convert]::ToHexString($hash.GetHashAndReset()).ToLowerInvariant() | Should -Be (Get-Sha256 $bytes)
    }
}

Describe 'Time limits' -Tag VM {
    It 'kills the process tree after -Timeout and says SandboxCommandTimedOut' {
        $r = Invoke-Captured { Invoke-SandboxCommand -Name streams 'sleep 300 & sleep 300; echo never' -Timeout 2 }
        $r.Output | Should -BeNullOrEmpty
        Get-ErrorId $r.Errors[0] | Should -Be 'SandboxCommandTimedOut'
        $r.Errors[0].CategoryInfo.Category | Should -Be 'OperationTimeout'
        $r.Errors[0].TargetObject | Should -Be 'streams'
        $LASTEXITCODE | Should -Be 137
        # The background sleep went with its parent.
        Invoke-SandboxCommand -Name streams 'ps -o args | grep -c "^sleep 300" || true' | Should -Be '0'
    }
}
